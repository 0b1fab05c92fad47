"""containerd task events: envelopes and publishers."""
