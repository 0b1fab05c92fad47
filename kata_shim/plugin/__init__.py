"""Code generation: the protoc-gen-kata-ttrpc plugin and the regen tool."""
