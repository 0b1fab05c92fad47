"""Shim observability: metrics recording, Prometheus exposition, the per-sandbox endpoint."""
