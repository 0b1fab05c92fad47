"""The guest agent: serves the Kata agent API (grpc.AgentService, grpc.Health) over ttrpc
and runs containers with runc. Entry point: `kata-agent-py` (kata_shim.guest.main)."""
