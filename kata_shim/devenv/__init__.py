"""Development environment helpers: a private containerd, busybox rootfs builders.

Used by the demo, the benchmarks and the integration tests; never by the shim.
"""
