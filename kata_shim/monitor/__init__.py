"""kata-shim-monitor: one HTTP endpoint aggregating every running shim's management endpoint."""
