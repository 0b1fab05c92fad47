"""The host directory a VM sandbox exports over 9p (`kataShared`), and what is bind-mounted in it.

Layout: `<share>/<container-id>/<name>`, one bind mount per shared host path
(`rootfs`, and `mount-<n>` for the OCI spec's bind-mount sources), seen in the
guest as `/run/kata-containers/shared/containers/<container-id>/<name>`.
The guest can write this directory (through the 9p server), so it is hostile
ground for the host (docs/security.md):
* every path below the share root is resolved with kata_shim.fdpath (one
  O_NOFOLLOW component at a time), and mounts are made and removed through
  the fds found that way: a guest-planted symlink is refused, never followed;
* a read-only share is read-only on the host side, so neither guest root nor
  the 9p server can write its source; every share is also `nosuid,nodev` on
  the host. The flags are set before the mount is visible in the share: the
  source is bound at a private staging point outside the share
  (`<state>/shared-staging/<tmp>/src`, never exported), remounted
  `bind,ro,nosuid,nodev` there, then moved into place (MS_MOVE keeps the
  flags, and the copies a shared share dir propagates to other mount
  namespaces, such as libvirt's QEMU's, carry them too). This works on every
  kernel (openEuler's 5.10 has no mount_setattr). The staging mount is made
  private so the move is allowed, and it is detached and removed on every path;
* a file is bound onto an empty file, a directory onto an empty directory;
  `unshare` detaches a container's binds by mount ID and removes its
  directory without following links or crossing into a mount, idempotently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kata_shim import fdpath, mounts
from kata_shim.errors import FailedPrecondition, InvalidArgument, ShimError

__all__ = ["GUEST_SHARED", "SharedDir", "run_mount"]

GUEST_SHARED = "/run/kata-containers/shared/containers"
MOUNT_TIMEOUT = 30.0
HOST_FLAGS = fdpath.MS_NOSUID | fdpath.MS_NODEV
STAGED = "src"


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


def _open_dir(path: Path) -> int:
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


@contextlib.contextmanager
def _staging_step(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise ShimError(f"share staging: cannot {what}: {exc}") from exc


def _private_mount(point: Path) -> int:
    """Bind `point` (the host's own directory) onto itself, private; an fd of that mount."""
    with fdpath.opened(_open_dir(point)) as point_fd:
        fdpath.bind(point_fd, point_fd)
        stage_fd = _open_dir(point)  # the new mount's root
        if fdpath.mount_id(stage_fd) == fdpath.mount_id(point_fd):
            os.close(stage_fd)  # never detach what holds the state dir
            raise OSError(5, f"{point} is not the new mount")
        try:
            fdpath.make_private(stage_fd)  # MS_MOVE refuses to move out of a shared mount
        except BaseException:
            with contextlib.suppress(OSError):
                fdpath.detach(stage_fd)
            os.close(stage_fd)
            raise
    return stage_fd


def _bind_staged(stage_fd: int, source_fd: int, is_dir: bool, flags: int) -> int:
    """Bind the source at `<stage>/src`, remount it with `flags`; an fd of the bind's root."""
    with fdpath.opened((_make_dir if is_dir else _make_file)(stage_fd, STAGED)) as target_fd:
        fdpath.bind(source_fd, target_fd)
    mounted_fd = fdpath.walk(stage_fd, [STAGED])
    try:
        if fdpath.mount_id(mounted_fd) == fdpath.mount_id(stage_fd):
            raise OSError(5, "the staged bind is not a new mount")
        fdpath.remount(mounted_fd, flags)
    except BaseException:
        os.close(mounted_fd)
        raise
    return mounted_fd


def _remove_staging_point(point: Path, is_dir: bool) -> None:
    """Remove `<point>/src` and `<point>`, never recursively: a leftover mount makes this fail."""
    with contextlib.suppress(FileNotFoundError):
        if is_dir:
            os.rmdir(point / STAGED)
        else:
            os.unlink(point / STAGED)
    os.rmdir(point)


class SharedDir:
    """One sandbox's 9p-exported directory on the host."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging = root.with_name(f"{root.name}-staging")  # in the state dir, not exported

    def create(self, *, propagating: bool = False) -> None:
        """Make the share directory. `propagating`: also make it its own shared mount, so
        what is bound in it later appears in the copy a file server in its own mount
        namespace holds (virtiofsd's `sandbox=namespace` makes a slave copy at start)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not propagating:
            return
        with fdpath.opened(self._open_root()) as root_fd:
            parent_fd = os.open(self.root.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            with fdpath.opened(parent_fd):
                if fdpath.mount_id(root_fd) == fdpath.mount_id(parent_fd):
                    fdpath.bind(root_fd, root_fd)
        with fdpath.opened(self._open_root()) as root_fd:  # the new mount's root
            fdpath.make_shared(root_fd)

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

    def _bind(
        self, root_fd: int, cid: str, name: str, source_fd: int, is_dir: bool, readonly: bool
    ) -> None:
        flags = HOST_FLAGS | (fdpath.MS_RDONLY if readonly else 0)
        with fdpath.opened(_make_dir(root_fd, cid)) as parent_fd:
            make = _make_dir if is_dir else _make_file
            with fdpath.opened(make(parent_fd, name)) as target_fd:
                if fdpath.mount_id(target_fd) != fdpath.mount_id(parent_fd):
                    return  # already shared: no second mount on top
                with self._staged(source_fd, is_dir, flags) as staged_fd:
                    fdpath.move(staged_fd, target_fd)

    @contextlib.contextmanager
    def _staged(self, source_fd: int, is_dir: bool, flags: int) -> Iterator[int]:
        """An fd of `source_fd` bound with `flags` at a private point outside the share.

        On exit the staging mount is detached (with the bind below it, unless
        that was moved away) and its directory removed, whatever happened.
        """
        with _staging_step("create a staging point"):
            self.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
            point = Path(tempfile.mkdtemp(dir=self.staging))
        try:
            with _staging_step(f"mount {point}"):
                stage_fd = _private_mount(point)
            with fdpath.opened(stage_fd):
                try:
                    with _staging_step(f"bind the source at {point}"):
                        staged_fd = _bind_staged(stage_fd, source_fd, is_dir, flags)
                    with fdpath.opened(staged_fd):
                        yield staged_fd
                finally:
                    with _staging_step(f"unmount {point}"):
                        fdpath.detach(stage_fd)
        finally:
            with _staging_step(f"remove {point}"):
                _remove_staging_point(point, is_dir)

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
