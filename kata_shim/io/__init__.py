"""Host-side IO: the stdio copy loop (compiled or pure Python) and stdio targets."""
