"""A hostile guest for tests/security: VM pods with a root shell in the guest, and host probes.

`HostileRig` is a private containerd with the QEMU sandbox (TCG) and
`debug_console_enabled`, so `guest(sandbox, script)` runs `script` as root in
the guest kernel (what a container that broke out of its namespaces has).
Each pod gets its own copy of the busybox rootfs (never the machine's shared
one: the tests try to overwrite it) with a static setuid-root program
`/bin/euid` that prints its effective uid, a read-only and a read-write
volume, and a decoy host directory the guest must never reach. `shared_fs`
picks the share: 9p (QEMU's server) or virtio-fs (the sandbox's virtiofsd).
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from kata_shim.devenv.shim import KataRig
from kata_shim.devenv.specs import shared_rootfs
from kata_shim.sandbox.share import GUEST_SHARED
from tests.fakes.vmkeys import vm_keys
from tests.integration.test_shim_containerd import _out, wait_status

CRI_TYPE = "io.kubernetes.cri.container-type"
CRI_SANDBOX = "io.kubernetes.cri.sandbox-id"
EUID_C = """#include <stdio.h>
#include <unistd.h>
int main(void) { printf("euid=%d uid=%d\\n", geteuid(), getuid()); return 0; }
"""
_RESULT = re.compile(r"@@(\w+)=([^$\s@]*)@@")
#: guest root's privilege attacks on a read-write volume (`$RW`, its path in the guest);
#: each prints `@@<key>=<exit status>@@` (results()); `plain` is an ordinary write
PRIVILEGE_ATTACK = """
cp /bin/sh $RW/suid-bb; chmod 4755 $RW/suid-bb; echo "@@chmod_suid=$?@@"
cp /bin/sh $RW/sgid-bb; chmod 2755 $RW/sgid-bb; echo "@@chmod_sgid=$?@@"
chmod u+s $RW/orig.txt; echo "@@chmod_existing=$?@@"
mknod $RW/kmem c 1 2; echo "@@mknod_char=$?@@"
mknod $RW/loop b 7 0; echo "@@mknod_block=$?@@"
chown 4242:4242 $RW/orig.txt; echo "@@chown=$?@@"
echo data > $RW/plain.txt; echo "@@plain=$?@@"
"""


def snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """relative path → (mode, uid, gid, content or link target) of everything below `root`."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISREG(st.st_mode):
            data = path.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            data = str(path.readlink()).encode()
        else:
            data = b""
        found[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, data)
    return found


def results(output: str) -> dict[str, str]:
    """`@@key=value@@` markers the guest script printed (the echoed script has `$`s instead)."""
    return dict(_RESULT.findall(output))


class HostileRig:
    def __init__(self, guest_image: Path, shared_fs: str = "virtio-9p") -> None:
        keys = vm_keys(guest_image, initrd=True)
        self.shared_fs = shared_fs
        self.rig = KataRig(hypervisor="qemu", hypervisor_keys=keys)
        text = self.rig.config.read_text()
        extra = f'debug_console_enabled = true\nshared_fs = "{shared_fs}"\n'
        self.rig.config.write_text(
            text.replace("[hypervisor.qemu]\n", f"[hypervisor.qemu]\n{extra}")
        )
        self.work = self.rig.work
        self.decoy = self.work / "decoy"
        (self.decoy / "sub").mkdir(parents=True)
        (self.decoy / "keep.txt").write_text("host data\n")
        (self.decoy / "sub" / "deep.txt").write_text("deep\n")
        self.euid = self.work / "euid"
        source = self.work / "euid.c"
        source.write_text(EUID_C)
        subprocess.run(["gcc", "-static", "-O", "-o", str(self.euid), str(source)], check=True)

    def __enter__(self) -> HostileRig:
        self.rig.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.rig.close()

    def pod_dirs(self, name: str) -> dict[str, Path]:
        """A rootfs copy (with setuid /bin/euid) and volumes `ro`, `rw` for pod `name`."""
        base = self.work / name
        rootfs = base / "rootfs"
        shutil.copytree(shared_rootfs(), rootfs, symlinks=True)
        shutil.copy(self.euid, rootfs / "bin" / "euid")
        (rootfs / "bin" / "euid").chmod(0o4755)
        (rootfs / "orig.txt").write_text("rootfs original\n")
        dirs = {"rootfs": rootfs}
        for kind in ("ro", "rw"):
            volume = base / f"vol-{kind}"
            volume.mkdir()
            (volume / "orig.txt").write_text(f"{kind} original\n")
            (volume / f"{name}-{kind}-marker").write_text(f"{name} secret\n")
            dirs[kind] = volume
        return dirs

    def spec(self, task: str, sandbox: str, dirs: dict[str, Path], user: int | None = None) -> Path:
        """A spec with `dirs`; `user` (uid = gid) runs `/rw/by-<uid>` creation first."""
        kind = "sandbox" if task == sandbox else "container"
        script = "sleep 600" if user is None else f"echo made > /rw/by-{user}; sleep 600"
        path = self.rig.spec_file(
            task, self.rig.sh(script), annotations={CRI_TYPE: kind, CRI_SANDBOX: sandbox}
        )
        spec: dict[str, Any] = json.loads(path.read_text())
        if user is not None:
            spec["process"]["user"] = {"uid": user, "gid": user}
        spec["root"] = {"path": str(dirs["rootfs"]), "readonly": kind == "sandbox"}
        spec["process"]["noNewPrivileges"] = False  # so the image's setuid binary can work
        spec["mounts"] += [
            {"destination": "/ro", "type": "bind", "source": str(dirs["ro"]),
             "options": ["rbind", "ro"]},
            {"destination": "/rw", "type": "bind", "source": str(dirs["rw"]),
             "options": ["rbind", "rw"]},
        ]  # fmt: skip
        path.write_text(json.dumps(spec))
        return path

    def run(
        self, task: str, sandbox: str, dirs: dict[str, Path], user: int | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        args = self.rig.run_spec_args(task, self.spec(task, sandbox, dirs, user), "-d")
        return self.rig.ctr(*args, timeout=240)

    def start(
        self, task: str, sandbox: str, dirs: dict[str, Path], user: int | None = None
    ) -> None:
        result = self.run(task, sandbox, dirs, user)
        assert result.returncode == 0, _out(result) + self.rig.containerd.log_tail()
        wait_status(self.rig, task, "RUNNING", timeout=60)

    def guest(self, sandbox: str, script: str) -> tuple[str, dict[str, str]]:
        """Run `script` in the guest's root shell; (output, its @@key=value@@ results)."""
        argv = [sys.executable, "-m", "kata_shim.cli.exec_cmd", sandbox]
        done = subprocess.run(
            [*argv, "--state-dir", str(self.rig.state_dir)],
            input=(script + "\nexit 0\n").encode(),
            capture_output=True,
            timeout=180,
        )
        out = done.stdout.decode(errors="replace")
        assert done.returncode == 0, out + done.stderr.decode(errors="replace")
        return out, results(out)

    def host_share(self, sandbox: str) -> Path:
        return self.rig.state_dir / sandbox / "shared"

    @staticmethod
    def guest_share(container: str) -> str:
        return f"{GUEST_SHARED}/{container}"
