"""The `kata-shim` administration CLI: check, env, image build, sandboxes, exec."""
