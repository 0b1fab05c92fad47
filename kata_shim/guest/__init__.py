"""The guest agent: serves the Kata agent API (grpc.AgentService, grpc.Health) over ttrpc
and runs containers with runc. Entry point: `kata-agent-py` (kata_shim.guest.main).

Layers: main (process, signals) → channel (unix / virtio-serial / vsock listener) →
service (protobuf ⇄ calls, thin) → containers (the container table; container + states: one
container's state machine) and process_calls (exec, signal, wait, stdin) → sandbox (storages,
OOM queue, cgroup parent, console dir) → processes, stdio, bundle, runc, spawn, reaper,
storage, cgroups, oom (one concern each).
Rule: nothing in the agent waits on a child except reaper.Reaper (one waitpid(-1) loop),
and every module is imported at top level (the guest image collects imports by probing).
"""
