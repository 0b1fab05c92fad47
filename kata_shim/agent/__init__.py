"""The host's client of the guest agent (`client.AgentClient`): the only place that builds
agent requests, applies their deadlines and maps their errors."""

from kata_shim.agent.client import AgentClient, AgentTimeouts

__all__ = ["AgentClient", "AgentTimeouts"]
