"""The host directory a VM sandbox exports over 9p (`kataShared`), and what is bind-mounted in it.

Layout: `<share>/<container-id>/<name>`, one bind mount per shared host path
(`rootfs`, and `mount-<n>` for the OCI spec's bind-mount sources), seen in the
guest as `/run/kata-containers/shared/containers/<container-id>/<name>`.
The guest can write this directory (through the 9p server), so it is hostile
ground for the host (docs/security.md):
* every path below the share root is resolved with kata_shim.fdpath (one
  O_NOFOLLOW component at a time), and mounts are made and removed through
  the fds found that way: a guest-planted symlink is refused, never followed;
* a read-only share is read-only on the host side (bind, then
  `remount,bind,ro`), so neither guest root nor the 9p server can write its
  source; every share is also `nosuid,nodev` on the host;
* a file is bound onto an empty file, a directory onto an empty directory;
  `unshare` detaches a container's binds by mount ID and removes its
  directory without following links or crossing into a mount, idempotently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

from kata_shim import fdpath, mounts
from kata_shim.errors import FailedPrecondition, InvalidArgument, ShimError

__all__ = ["GUEST_SHARED", "SharedDir", "run_mount"]

GUEST_SHARED = "/run/kata-containers/shared/containers"
MOUNT_TIMEOUT = 30.0
HOST_FLAGS = fdpath.MS_NOSUID | fdpath.MS_NODEV


async def run_mount(argv: list[str], timeout: float = MOUNT_TIMEOUT) -> None:
    """Run mount(8)/umount(8); ShimError with its message when it fails or hangs."""
    code, err = await mounts.run_command(argv, timeout)
    if code != 0:
        raise ShimError(f"{' '.join(argv)} failed: {err}")


def _check_component(value: str, what: str) -> None:
    if not fdpath.check_component(value):
        raise InvalidArgument(f"{what} {value!r} cannot be used as a share path component")


def _refused(where: str, exc: OSError) -> ShimError:
    return FailedPrecondition(f"share {where}: refusing to follow the guest's path: {exc}")


def _make_dir(parent_fd: int, name: str) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    return fdpath.walk(parent_fd, [name], directory=True)


def _make_file(parent_fd: int, name: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    os.close(os.open(name, flags, 0o600, dir_fd=parent_fd))  # ELOOP on a planted symlink
    return fdpath.walk(parent_fd, [name])


class SharedDir:
    """One sandbox's 9p-exported directory on the host."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def _open_root(self) -> int:
        return os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)

    async def share(
        self, container_id: str, name: str, host_path: Path, *, readonly: bool = False
    ) -> str:
        """Bind `host_path` at `<container_id>/<name>`; return the guest's path for it."""
        _check_component(container_id, "container id")
        _check_component(name, "share name")
        try:
            source_fd = os.open(host_path, os.O_PATH | os.O_CLOEXEC)
        except OSError as exc:
            raise FailedPrecondition(
                f"cannot share {host_path} with the VM: it does not exist ({exc.strerror})"
            ) from None
        with fdpath.opened(source_fd), fdpath.opened(self._open_root()) as root_fd:
            is_dir = stat.S_ISDIR(os.fstat(source_fd).st_mode)
            try:
                self._bind(root_fd, container_id, name, source_fd, is_dir, readonly)
            except OSError as exc:
                raise _refused(f"{container_id}/{name}", exc) from None
        return f"{GUEST_SHARED}/{container_id}/{name}"

    @staticmethod
    def _bind(
        root_fd: int, cid: str, name: str, source_fd: int, is_dir: bool, readonly: bool
    ) -> None:
        with fdpath.opened(_make_dir(root_fd, cid)) as parent_fd:
            make = _make_dir if is_dir else _make_file
            with fdpath.opened(make(parent_fd, name)) as target_fd:
                if fdpath.mount_id(target_fd) != fdpath.mount_id(parent_fd):
                    return  # already shared: no second mount on top
                fdpath.bind(source_fd, target_fd)
            # the name now leads to the new mount's root; the old fd still holds the dir below
            with fdpath.opened(fdpath.walk(parent_fd, [name])) as mounted_fd:
                if fdpath.mount_id(mounted_fd) == fdpath.mount_id(parent_fd):
                    raise OSError(5, f"{name} is not the new mount")
                flags = HOST_FLAGS | (fdpath.MS_RDONLY if readonly else 0)
                try:
                    fdpath.remount(mounted_fd, flags)
                except OSError:
                    fdpath.detach(mounted_fd)
                    raise

    async def unshare(self, container_id: str) -> None:
        """Unmount and remove everything shared for `container_id` (idempotent)."""
        _check_component(container_id, "container id")
        if not self.root.is_dir():
            return
        mounts.unmount_all_under(self.root, container_id)
        left = mounts.mounted_below(self.root, container_id)
        if left:
            raise mounts.MountedError(f"not removing {container_id}: still mounted: {left}")
        with fdpath.opened(self._open_root()) as root_fd:
            try:
                st = os.stat(container_id, dir_fd=root_fd, follow_symlinks=False)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(container_id, dir_fd=root_fd)  # fd-based: never follows links
            else:
                os.unlink(container_id, dir_fd=root_fd)

    async def unshare_all(self) -> None:
        if self.root.is_dir():
            for entry in sorted(os.listdir(self.root)):
                await self.unshare(entry)
