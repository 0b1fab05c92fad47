"""Create of one task inside an acquired pod: rootfs, the owners it brings (to the sandbox),
guest shares (rootfs and volumes), CreateContainer, stdio, exit watch.

Rule: on any failure (or cancellation by containerd's deadline) everything
done so far is undone, in reverse, shielded from the cancellation; the pod
itself is released by the caller. The init's pumps and exit watch start
here, at Create: the process exists in the agent from now on, so Wait (which
containerd calls before Start) must already see a kill or a sandbox death.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kata_shim.errors import ShimError
from kata_shim.io.stdio import HostStdio
from kata_shim.process.process import Process
from kata_shim.proto import task_pb2
from kata_shim.sandbox.owners import Owners, owners_in_rootfs, owners_of_user
from kata_shim.task.containers import Container, TaskEnv
from kata_shim.task.exitwatch import spawn_exit_watch
from kata_shim.task.lifecycle import open_stdio, remove_from_agent, start_pumps
from kata_shim.task.mounts import mount_rootfs, unmount_rootfs
from kata_shim.task.pod import Pod
from kata_shim.task.spec import agent_spec, host_rootfs, sandbox_pidns
from kata_shim.task.volumes import make_mount_points, share_volumes

__all__ = ["create_container"]

log = logging.getLogger(__name__)


async def create_container(
    env: TaskEnv,
    request: task_pb2.CreateTaskRequest,
    spec: Mapping[str, Any],
    pod: Pod,
    init: Process,
) -> Container:
    """Build the container in `pod`; the caller holds `init.lock` and publishes TaskCreate."""
    container = Container(request.id, request.bundle, pod, init, rootfs=list(request.rootfs))
    if request.rootfs:
        container.host_rootfs = host_rootfs(request.bundle, {"root": {"path": "rootfs"}})
        container.mounted_layers = await mount_rootfs(request.rootfs, container.host_rootfs)
    else:
        container.host_rootfs = host_rootfs(request.bundle, spec)
    created = False
    host: HostStdio | None = None
    try:
        host = await open_stdio(env, container, init)
        readonly = bool((spec.get("root") or {}).get("readonly"))
        if readonly and pod.sandbox.isolated:
            make_mount_points(container.host_rootfs, spec)
        pod.sandbox.allow_owners(_owners(spec, container.host_rootfs))
        guest_root = await pod.sandbox.share(
            container.id, "rootfs", container.host_rootfs, readonly=readonly
        )
        volumes = await share_volumes(pod.sandbox, container.id, spec)
        guest_spec = agent_spec(spec, guest_root, volumes, vm=pod.sandbox.isolated)
        await pod.agent.create_container(
            container.id, guest_spec, sandbox_pidns=sandbox_pidns(spec)
        )
        created = True
        start_pumps(env, container, init, host)
    except BaseException:
        await asyncio.shield(_undo(container, created, host))
        raise
    spawn_exit_watch(env, container, init)
    return container


def _owners(spec: Mapping[str, Any], rootfs: Path) -> Owners:
    """The owners the container brings: its user's ids and its rootfs's users and groups."""
    process = spec.get("process")
    user = process.get("user") if isinstance(process, Mapping) else None
    user = user if isinstance(user, Mapping) else {}
    owners = owners_of_user(user.get("uid"), user.get("gid"), user.get("additionalGids") or ())
    return owners | owners_in_rootfs(rootfs)


async def _undo(container: Container, created: bool, host: HostStdio | None) -> None:
    pod = container.pod
    if container.init.pumps is not None:
        await container.init.pumps.close()
    elif host is not None:
        await host.close()
    if created and not pod.dead:
        with contextlib.suppress(ShimError):
            await remove_from_agent(container)
    try:
        await pod.sandbox.unshare(container.id)
    except Exception:
        log.exception("create of %s failed; unsharing its rootfs failed too", container.id)
    if container.host_rootfs is not None and container.mounted_layers:
        await unmount_rootfs(container.host_rootfs, container.mounted_layers)
