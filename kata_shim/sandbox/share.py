"""The host directory a VM sandbox exports over 9p (`kataShared`), and what is bind-mounted in it.

Layout: `<share>/<container-id>/<name>`, one bind mount per shared host path
(`rootfs`, and `mount-<n>` for the OCI spec's bind-mount sources), seen in the
guest as `/run/kata-containers/shared/containers/<container-id>/<name>`.
Rules: names are single path components; a file is bound onto an empty file, a
directory onto an empty directory; binds are read-write (the guest spec's own
options decide read-only); `unshare` removes a container's binds and its
directory, idempotently, and never deletes into a mounted file system.
"""

from __future__ import annotations

from pathlib import Path

from kata_shim import mounts
from kata_shim.errors import FailedPrecondition, InvalidArgument, ShimError

__all__ = ["GUEST_SHARED", "SharedDir", "run_mount"]

GUEST_SHARED = "/run/kata-containers/shared/containers"
MOUNT_TIMEOUT = 30.0


async def run_mount(argv: list[str], timeout: float = MOUNT_TIMEOUT) -> None:
    """Run mount(8)/umount(8); ShimError with its message when it fails or hangs."""
    code, err = await mounts.run_command(argv, timeout)
    if code != 0:
        raise ShimError(f"{' '.join(argv)} failed: {err}")


def _check_component(value: str, what: str) -> None:
    if not value or value in (".", "..") or "/" in value or "\0" in value:
        raise InvalidArgument(f"{what} {value!r} cannot be used as a share path component")


class SharedDir:
    """One sandbox's 9p-exported directory on the host."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def share(self, container_id: str, name: str, host_path: Path) -> str:
        """Bind `host_path` at `<container_id>/<name>`; return the guest's path for it."""
        _check_component(container_id, "container id")
        _check_component(name, "share name")
        if not host_path.exists():
            raise FailedPrecondition(f"cannot share {host_path} with the VM: it does not exist")
        target = self.root / container_id / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if host_path.is_dir():
            target.mkdir(exist_ok=True)
        else:
            target.touch(exist_ok=True)
        if not mounts.is_mount_point(target):
            await run_mount(["mount", "--bind", str(host_path), str(target)])
        return f"{GUEST_SHARED}/{container_id}/{name}"

    async def unshare(self, container_id: str) -> None:
        """Unmount and remove everything shared for `container_id` (idempotent)."""
        _check_component(container_id, "container id")
        directory = self.root / container_id
        for point in mounts.mount_points_under(directory):
            await run_mount(["umount", "-l", str(point)])
        mounts.remove_tree(directory)

    async def unshare_all(self) -> None:
        if self.root.is_dir():
            for entry in sorted(self.root.iterdir()):
                await self.unshare(entry.name)
