"""A hostile guest (root in the VM, through the debug console) attacks the host via its share.

One VM pod A (QEMU, TCG) runs with a read-only rootfs copy, a read-only and a
read-write volume; the guest's root shell then tries, in file order:
1. to write the read-only volume's and rootfs's host sources;
2. to plant setuid/setgid files and device nodes on the host (and a setuid
   binary of the image must still work for the container);
3. to reach a second pod B's share;
4. symlinks to a decoy host directory and file, and a renamed container
   directory replaced by a link, before an app container is created and
   deleted;
5. to give host files owners the pod does not have (chown through the share:
   refused; owners of its containers and images work; a file the container
   makes as uid 1000 is 1000's on the host);
6. QEMU's confinement: /proc/<qemu>/status, then a `spawn` through QMP
   (a bridge netdev's helper; a bare QEMU without -sandbox does spawn it):
   the sandbox kills QEMU (SIGSYS) before anything runs.
After every attack the host is inspected; at the end nothing is mounted.
Everything runs twice: over 9p (QEMU's file server) and over virtio-fs (the
sandbox's virtiofsd; its confinement is read from /proc too, and it must be
gone once QEMU is).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu.qmp import QMPClient

from kata_shim.sandbox.share import GUEST_SHARED
from tests.integration.test_shim_containerd import remove, wait_status
from tests.integration.test_vm_containerd import mounts_of, qemu_processes
from tests.security.hostile import PRIVILEGE_ATTACK, HostileRig, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

QEMU_CAPS_MASK = 0xF  # cap_chown, cap_dac_override, cap_dac_read_search, cap_fowner
VIRTIOFSD_CAPS_MASK = 0xCB  # cap_chown, cap_dac_override, cap_fowner, cap_setgid, cap_setuid


class Pods:
    def __init__(self, hostile: HostileRig) -> None:
        self.hostile = hostile
        self.a = hostile.rig.id("pod-a")
        self.a_dirs = hostile.pod_dirs("a")
        self.decoy_before = snapshot(hostile.decoy)
        hostile.start(self.a, self.a, self.a_dirs)
        # after create: the shim made the mount points (/ro, /rw) in the read-only rootfs
        self.before = {name: snapshot(path) for name, path in self.a_dirs.items()}


@pytest.fixture(scope="module", params=["virtio-9p", "virtio-fs"])
def pods(guest_image: Path, request: pytest.FixtureRequest) -> Iterator[Pods]:
    with HostileRig(guest_image, request.param) as hostile:
        state = Pods(hostile)
        yield state
        for task in list(hostile.rig.ids):
            hostile.rig.ctr("task", "kill", "-s", "SIGKILL", task, timeout=30)
        for task in reversed(hostile.rig.ids):
            hostile.rig.ctr("task", "delete", "--force", task, timeout=60)
            hostile.rig.ctr("container", "delete", task, timeout=30)
        left = mounts_of(hostile.rig)
        assert snapshot(hostile.decoy) == state.decoy_before
        assert not left, left


def _share_of(pods: Pods, kind: str) -> str:
    """The guest's path of pod A's `kind` volume (found by its marker file)."""
    return f"$(dirname {pods.hostile.guest_share(pods.a)}/mount-*/a-{kind}-marker)"


def test_read_only_volume_and_rootfs_cannot_be_written_from_guest_root(pods: Pods) -> None:
    share = pods.hostile.guest_share(pods.a)
    script = f"""
RO={_share_of(pods, "ro")}
echo pwned > $RO/orig.txt; echo "@@ro_overwrite=$?@@"
echo new > $RO/planted.txt; echo "@@ro_create=$?@@"
rm -f $RO/a-ro-marker; echo "@@ro_remove=$?@@"
echo pwned > {share}/rootfs/orig.txt; echo "@@rootfs_overwrite=$?@@"
echo new > {share}/rootfs/bin/planted; echo "@@rootfs_create=$?@@"
chmod 777 {share}/rootfs/bin; echo "@@rootfs_chmod=$?@@"
grep kataShared /proc/mounts | head -1
"""
    out, found = pods.hostile.guest(pods.a, script)
    print(out)
    assert found and all(found[key] != "0" for key in found), found
    assert "Read-only file system" in out
    assert snapshot(pods.a_dirs["ro"]) == pods.before["ro"]
    assert snapshot(pods.a_dirs["rootfs"]) == pods.before["rootfs"]


#: a file capability (cap_setuid+ep, VFS_CAP_REVISION_2) set on a shared file by guest root
FILE_CAP_ATTACK = """
cp /bin/sh $RW/cap-bb
python3 -c 'import os, sys
cap = bytes.fromhex("01000002" "80000000" "00000000" "00000000" "00000000")
try:
    os.setxattr(sys.argv[1], "security.capability", cap); print("@" "@file_cap=0@@")
except OSError as exc:  # (split markers: the echoed script must not match)
    print("@" "@file_cap=%d@@" % exc.errno)' $RW/cap-bb
"""


def test_no_setuid_file_or_device_node_reaches_the_host(pods: Pods) -> None:
    script = (
        f"""
RW={_share_of(pods, "rw")}
for tool in cp chmod mknod chown; do command -v $tool >/dev/null || echo "@@missing=$tool@@"; done
"""
        + PRIVILEGE_ATTACK
        + FILE_CAP_ATTACK
    )
    out, found = pods.hostile.guest(pods.a, script)
    print(out)
    assert "missing" not in found, out
    for key in ("chmod_suid", "chmod_sgid", "chmod_existing", "mknod_char", "mknod_block"):
        assert found[key] != "0", (key, out)
    assert found["file_cap"] != "0", out  # present: python ran; refused: no file capability
    assert found["plain"] == "0", out
    volume = pods.a_dirs["rw"]
    for path in volume.iterdir():
        st = path.lstat()
        print(f"host: {stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid} {path.name}")
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), path
        assert not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)), path
        assert "security.capability" not in os.listxattr(path, follow_symlinks=False), path
    assert (volume / "plain.txt").read_text() == "data\n"

    exec_id = "euid"
    done = pods.hostile.rig.ctr(
        "task", "exec", "--user", "1000", "--exec-id", exec_id, pods.a, "/bin/euid", timeout=120
    )
    print("container (uid 1000) runs the image's setuid /bin/euid:", done.stdout.decode())
    assert done.returncode == 0 and done.stdout.decode().split() == ["euid=0", "uid=1000"]


def test_a_guest_cannot_reach_another_pods_share(pods: Pods) -> None:
    hostile = pods.hostile
    b = hostile.rig.id("pod-b")
    b_dirs = hostile.pod_dirs("b")
    hostile.start(b, b, b_dirs)
    b_share = hostile.host_share(b)
    for me, other in ((pods.a, b), (b, pods.a)):
        script = f"""
ls {hostile.guest_share(other)} >/dev/null 2>&1; echo "@@other_listed=$?@@"
ls -a {hostile.guest_share(me)}/../.. | tr '\\n' ' '; echo
N=$(find {GUEST_SHARED}/ -name '*-marker' | wc -l); echo "@@markers=$N@@"
N=$(find {GUEST_SHARED}/ -name '*{other}*' | wc -l); echo "@@other_files=$N@@"
"""
        out, found = hostile.guest(me, script)
        print(f"--- guest of {me}:\n{out}")
        assert found["other_listed"] != "0" and found["other_files"] == "0", out
        assert found["markers"] == "2", out  # its own ro and rw markers only
    assert sorted(os.listdir(b_share)) == [b]
    assert sorted(os.listdir(hostile.host_share(pods.a))) == [pods.a]
    hostile.rig.ctr("task", "kill", "-s", "SIGKILL", b, timeout=30)
    wait_status(hostile.rig, b, "STOPPED", timeout=60)
    remove(hostile.rig, b)
    assert not b_share.exists()


def test_guest_symlinks_never_lead_create_or_delete_outside_the_share(pods: Pods) -> None:
    hostile = pods.hostile
    decoy = hostile.decoy
    trap, app = hostile.rig.id("trap"), hostile.rig.id("app")
    share = hostile.guest_share("")
    plant = f"""
ln -s {decoy} {share}{trap}; echo "@@planted_dir=$?@@"
"""
    out, found = hostile.guest(pods.a, plant)
    assert found["planted_dir"] == "0", out
    refused = hostile.run(trap, pods.a, hostile.pod_dirs("trap"))
    print("create over a planted link:", refused.returncode, refused.stderr.decode()[-300:])
    assert refused.returncode != 0 and b"refusing to follow" in refused.stderr
    assert snapshot(decoy) == pods.decoy_before
    hostile.rig.ctr("container", "delete", trap, timeout=30)

    hostile.start(app, pods.a, hostile.pod_dirs("app"))
    attack = f"""
cd {share}{app} || exit 9
ln -s {decoy} evil-dir; ln -s {decoy}/keep.txt evil-file; echo "@@links=$?@@"
cd {share}
mv {app} {app}-moved; echo "@@renamed=$?@@"
ln -s {decoy} {app}; echo "@@replaced=$?@@"
ls -la {share} | tr '\\n' ' '; echo
"""
    out, found = hostile.guest(pods.a, attack)
    print(out)
    assert found["links"] == "0" and found["renamed"] == "0" and found["replaced"] == "0", out
    host = hostile.host_share(pods.a)
    assert (host / app).is_symlink()  # the guest's links are real links on the host
    hostile.rig.ctr("task", "kill", "-s", "SIGKILL", app, timeout=30)
    wait_status(hostile.rig, app, "STOPPED", timeout=60)
    remove(hostile.rig, app)
    assert snapshot(decoy) == pods.decoy_before
    assert not [m for m in mounts_of(hostile.rig) if str(decoy) in m]
    assert not (host / app).exists() and not (host / app).is_symlink()


def _owner(path: Path) -> str:
    st = path.lstat()
    return f"{st.st_uid}:{st.st_gid}"


def _wait_for(path: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert path.exists(), f"{path} never appeared"


CHOWNS = """
cd {rw} || exit 9
for f in stranger group-stranger user-stranger pod-user image-user; do echo x > $f; done
chown 4242:4242 stranger; echo "@@stranger=$?@@"
chown :4242 group-stranger; echo "@@group_stranger=$?@@"
chown 4242 user-stranger; echo "@@user_stranger=$?@@"
chown 1000:1000 orig.txt pod-user; echo "@@pod_user=$?@@"
chown 3456:3456 image-user; echo "@@image_user=$?@@"
python3 -c 'import os
os.setgid(4242); os.setuid(4242)
try:
    open("as-stranger", "w"); print("@" "@create_as_stranger=0@@")
except OSError as exc:  # (split markers: the echoed script must not match)
    print("@" "@create_as_stranger=%d@@" % exc.errno)'
ls -ln . | tr '\\n' ' '; echo
"""


def test_guest_root_cannot_give_a_host_file_an_owner_the_pod_does_not_have(pods: Pods) -> None:
    """Owners reach the host only when the pod has them: its containers' users (uid 1000
    here) and the users in their images' /etc/passwd (3456 here). 4242 it never has."""
    hostile = pods.hostile
    early, found = hostile.guest(
        pods.a, f'RW={_share_of(pods, "rw")}\nchown 3456 $RW/orig.txt; echo "@@early=$?@@"'
    )
    assert found["early"] != "0", early  # 3456 is no owner of the pod yet
    assert _owner(pods.a_dirs["rw"] / "orig.txt") == "0:0"

    own = hostile.rig.id("own")
    dirs = hostile.pod_dirs("own")
    (dirs["rootfs"] / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\nsvc:x:3456:3456::/:\n")
    (dirs["rootfs"] / "etc" / "group").write_text("root:x:0:\nsvc:x:3456:\n")
    dirs["rw"].chmod(0o777)  # uid 1000 creates its file there
    hostile.start(own, pods.a, dirs, user=1000)
    made = dirs["rw"] / "by-1000"
    _wait_for(made)
    print("created by the container (uid 1000):", _owner(made))
    assert _owner(made) == "1000:1000"

    rw = f"$(dirname {hostile.guest_share(own)}/mount-*/own-rw-marker)"
    out, found = hostile.guest(pods.a, CHOWNS.format(rw=rw))
    print(out)
    for key in ("stranger", "group_stranger", "user_stranger"):
        assert found[key] != "0", (key, out)
    # a guest process as undeclared uid 4242 creates a file: virtiofsd cannot take that id
    # (refused); 9p creates it as root and its chown to 4242 is refused (root keeps it)
    refused = hostile.shared_fs == "virtio-fs"
    assert (found["create_as_stranger"] != "0") is refused, out
    if not refused:
        assert _owner(dirs["rw"] / "as-stranger") == "0:0"
    assert found["pod_user"] == "0" and found["image_user"] == "0", out
    assert "Operation not permitted" in out
    owners = {path.name: _owner(path) for path in dirs["rw"].iterdir()}
    print("host:", owners)
    for name in ("stranger", "group-stranger", "user-stranger"):
        assert owners[name] == "0:0", (name, owners)
    assert owners["orig.txt"] == owners["pod-user"] == "1000:1000"
    assert owners["image-user"] == "3456:3456"
    assert not {path.lstat().st_uid for path in pods.a_dirs["rw"].iterdir()} & {3456, 4242}
    assert not {path.lstat().st_uid for path in dirs["rw"].iterdir()} & {4242}
    assert not {path.lstat().st_gid for path in dirs["rw"].iterdir()} & {4242}


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def _virtiofsds(state: Path) -> list[int]:
    """virtiofsd processes serving `state`'s share (its parent and its namespaced child)."""
    found = []
    for entry in os.listdir("/proc"):
        line = _cmdline(int(entry)) if entry.isdigit() else ""
        if "virtiofsd" in line and f"source={state}/shared" in line:
            found.append(int(entry))
    return sorted(found)


def _check_virtiofsd(state: Path) -> list[int]:
    """virtiofsd's confinement, from /proc (virtio-fs only): both processes are under the
    jail's and no_new_privs; the serving child keeps only the file-serving capabilities
    (0xcb) with an empty bounding set, the waiting parent none."""
    pids = _virtiofsds(state)
    assert len(pids) == 2, pids
    for pid in pids:
        status = _status(pid)
        print("virtiofsd", pid, {k: status[k] for k in status if k.startswith(("Cap", "Secc"))})
        assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1"
        assert int(status["CapBnd"], 16) == 0 and int(status["CapAmb"], 16) == 0
    caps = sorted(int(_status(pid)["CapEff"], 16) for pid in pids)
    assert caps == [0, VIRTIOFSD_CAPS_MASK], caps
    return pids


def test_qemu_is_seccomp_confined_with_reduced_capabilities(pods: Pods) -> None:
    hostile = pods.hostile
    state = hostile.rig.state_dir / pods.a
    virtiofsds = _check_virtiofsd(state) if hostile.shared_fs == "virtio-fs" else []
    qemus = [pid for pid in qemu_processes(hostile.rig) if str(state) in _cmdline(pid)]
    assert len(qemus) == 1, qemu_processes(hostile.rig)
    status = _status(qemus[0])
    print({key: status[key] for key in status if key.startswith(("Cap", "Seccomp", "NoNew"))})
    assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1"
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[key], 16) == QEMU_CAPS_MASK, (key, status[key])
    assert int(status["CapInh"], 16) == 0 and int(status["CapAmb"], 16) == 0

    control = hostile.work / "spawned-by-unconfined-qemu"
    _spawn_from_unconfined_qemu(hostile.work / "control.sock", control)
    assert control.exists(), "the QMP spawn path did not spawn even without a sandbox"

    marker = hostile.work / "spawned-by-qemu"
    outcome = asyncio.run(_qmp_spawn(state / "qmp.sock", marker))
    print("QMP netdev_add bridge helper (a spawn): ->", outcome)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{qemus[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{qemus[0]}").exists(), "QEMU survived a denied spawn"
    assert not marker.exists()
    wait_status(hostile.rig, pods.a, "STOPPED", timeout=60)
    deadline = time.monotonic() + 30  # QEMU is gone: so is its virtiofsd
    while any(Path(f"/proc/{pid}").exists() for pid in virtiofsds):
        assert time.monotonic() < deadline, f"virtiofsd {virtiofsds} outlived QEMU"
        time.sleep(0.2)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _spawn_from_unconfined_qemu(socket: Path, marker: Path) -> None:
    """The same QMP command against a bare QEMU without -sandbox: it does spawn."""
    argv = ["qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none"]
    qemu = subprocess.Popen([*argv, "-qmp", f"unix:{socket},server=on,wait=off"])
    try:
        deadline = time.monotonic() + 30
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        print("control (no -sandbox):", asyncio.run(_qmp_spawn(socket, marker)))
    finally:
        qemu.kill()
        qemu.wait()


async def _qmp_spawn(socket: Path, marker: Path) -> str:
    """netdev_add of a bridge forks and execs its helper (through sh -c: a command line)."""
    client = QMPClient("kata-shim-security-test")
    await client.connect(str(socket))
    arguments = {"type": "bridge", "id": "spawn0", "br": "ks0", "helper": f"touch {marker} #"}
    try:
        return repr(await asyncio.wait_for(client.execute("netdev_add", arguments), 20))
    except Exception as exc:  # QEMU is killed by its sandbox mid-command
        return f"refused: {exc!r}"
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
