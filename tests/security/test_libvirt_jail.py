"""A hostile guest on the libvirt backend: libvirt's QEMU runs under our jail as well.

One VM pod (private containerd, libvirt domain under TCG, debug console on),
HostileRig's pod: a read-only rootfs copy, a read-only and a read-write
volume. The guest's root shell then tries
1. setuid/setgid chmod, char/block mknod and a chown to an owner the pod lacks,
   in the read-write volume through the share: refused in the guest, and the
   host's `stat` shows none of them;
2. writing the read-only volume's and rootfs's host sources: libvirt's QEMU
   serves the share from its own mount namespace, a slave copy of the share
   dir, so this holds only if that copy was created read-only;
and the host checks that QEMU is libvirt's child under our seccomp filter
(`Seccomp: 2`), with libvirt's own `-sandbox` stacked on it.
"""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_shim.devenv.libvirtd import LibvirtDaemons
from tests.integration.test_vm_containerd import mounts_of, qemu_processes
from tests.security.hostile import PRIVILEGE_ATTACK, HostileRig, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

QEMU_CAPS_MASK = 0xF  # cap_chown, cap_dac_override, cap_dac_read_search, cap_fowner


class LibvirtHostileRig(HostileRig):
    """HostileRig's pod and tools, with the same keys in `[hypervisor.libvirt]`."""

    def __init__(self, guest_image: Path) -> None:
        super().__init__(guest_image)
        text = self.rig.config.read_text()
        self.rig.config.write_text(text.replace("[hypervisor.qemu]\n", "[hypervisor.libvirt]\n"))


class Pod:
    def __init__(self, hostile: LibvirtHostileRig) -> None:
        self.hostile = hostile
        self.id = hostile.rig.id("lv-pod")
        self.dirs = hostile.pod_dirs("a")
        hostile.start(self.id, self.id, self.dirs)
        self.before = {name: snapshot(path) for name, path in self.dirs.items()}


@pytest.fixture(scope="module")
def pod(guest_image: Path) -> Iterator[Pod]:
    missing = [b for b in ("libvirtd", "virtlogd", "virsh") if shutil.which(b) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/dev.sh setup")
    daemons = LibvirtDaemons()
    daemons.start()
    try:
        with LibvirtHostileRig(guest_image) as hostile:
            state = Pod(hostile)
            yield state
            hostile.rig.ctr("task", "kill", "-s", "SIGKILL", state.id, timeout=30)
            hostile.rig.ctr("task", "delete", "--force", state.id, timeout=120)
            hostile.rig.ctr("container", "delete", state.id, timeout=30)
            assert not mounts_of(hostile.rig)
    finally:
        daemons.stop()
        shutil.rmtree(daemons.work, ignore_errors=True)


def _volume(pod: Pod, kind: str) -> str:
    """The guest's path of the pod's `kind` volume (found by its marker file)."""
    return f"$(dirname {pod.hostile.guest_share(pod.id)}/mount-*/a-{kind}-marker)"


def test_no_setuid_file_or_device_node_reaches_the_host(pod: Pod) -> None:
    script = (
        f"""
RW={_volume(pod, "rw")}
"""
        + PRIVILEGE_ATTACK
    )
    out, found = pod.hostile.guest(pod.id, script)
    print(out)
    for key in ("chmod_suid", "chmod_sgid", "chmod_existing", "mknod_char", "mknod_block", "chown"):
        assert found[key] != "0", (key, out)
    assert "Operation not permitted" in out
    assert found["plain"] == "0", out
    volume = pod.dirs["rw"]
    for path in sorted(volume.iterdir()):
        st = path.lstat()
        print(f"host: {stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid} {path.name}")
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), path
        assert not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)), path
        assert 4242 not in (st.st_uid, st.st_gid), path  # the owner guard (ownerguard.py)
    assert (volume / "plain.txt").read_text() == "data\n"


def test_read_only_sources_cannot_be_written_through_libvirts_qemu(pod: Pod) -> None:
    share = pod.hostile.guest_share(pod.id)
    script = f"""
RO={_volume(pod, "ro")}
echo pwned > $RO/orig.txt; echo "@@ro_overwrite=$?@@"
echo new > $RO/planted.txt; echo "@@ro_create=$?@@"
echo pwned > {share}/rootfs/orig.txt; echo "@@rootfs_overwrite=$?@@"
"""
    out, found = pod.hostile.guest(pod.id, script)
    print(out)
    assert set(found) == {"ro_overwrite", "ro_create", "rootfs_overwrite"}, out
    assert all(value != "0" for value in found.values()), found
    assert snapshot(pod.dirs["ro"]) == pod.before["ro"]
    assert snapshot(pod.dirs["rootfs"]) == pod.before["rootfs"]


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_libvirts_qemu_runs_under_the_jail_and_libvirts_sandbox(pod: Pod) -> None:
    qemus = qemu_processes(pod.hostile.rig)
    assert len(qemus) == 1, qemus
    pid = qemus[0]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    status = _status(pid)
    print({key: status[key] for key in status if key.startswith(("Cap", "Seccomp", "NoNew"))})
    assert Path(f"/proc/{pid}/exe").resolve() == Path(shutil.which("qemu-system-x86_64")).resolve()
    assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1"
    # the jail's filter plus QEMU's -sandbox (libvirt's qemu.conf seccomp_sandbox)
    assert int(status["Seccomp_filters"]) >= 2
    sandbox = argv[argv.index(b"-sandbox") + 1].decode()
    print("libvirt's -sandbox:", sandbox)
    assert sandbox.startswith("on") and "spawn=deny" in sandbox
    # libvirt leaves a root QEMU almost every capability; the wrapper keeps only QEMU_CAPS
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[key], 16) == QEMU_CAPS_MASK, (key, status[key])
    assert int(status["CapInh"], 16) == 0 and int(status["CapAmb"], 16) == 0
