"""Guest image builder: an uncompressed PVH vmlinux and an initramfs with our agent."""
