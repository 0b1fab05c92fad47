"""Stand-ins for virtlogd, libvirtd and virsh on PATH, for the libvirtd harness's tests.

`install(bin_dir)` writes the three programs; they find their run directory in
FAKE_LIBVIRT_RUN. A fake daemon (`virtlogd|libvirtd -d -p PIDFILE`) refuses to
start over a live one (as libvirt's do), daemonizes (double fork, own session,
comm = its name), listens on `<run>/virtlogd-sock` or `<run>/libvirt-sock`,
writes its pid file, and only then lets `-d`'s parent exit 0; SIGTERM removes
its socket and ends it. FAKE_LIBVIRTD_FAIL=1 makes libvirtd fail to start.
`virsh -c URI uri` answers 0 when the libvirtd socket (`?socket=` in URI, else
`<run>/libvirt-sock`) accepts a connection.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["install"]

DAEMON = r"""
import ctypes, os, signal, socket, sys
name = os.path.basename(sys.argv[0])
path = os.path.join(os.environ["FAKE_LIBVIRT_RUN"],
                    {"virtlogd": "virtlogd-sock", "libvirtd": "libvirt-sock"}[name])
if os.environ.get("FAKE_" + name.upper() + "_FAIL"):
    sys.exit(1)
probe = socket.socket(socket.AF_UNIX)
try:
    probe.connect(path)
    sys.exit(f"{name}: already running on {path}")
except OSError:
    pass
pid_file = sys.argv[sys.argv.index("-p") + 1]
ready_r, ready_w = os.pipe()
if os.fork():
    os.close(ready_w)
    sys.exit(0 if os.read(ready_r, 1) == b"1" else 1)
os.setsid()
if os.fork():
    os._exit(0)
ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
if os.path.exists(path):
    os.unlink(path)
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen(16)
with open(pid_file, "w") as out:
    out.write(f"{os.getpid()}\n")
def bye(*_):
    os.unlink(path)
    os._exit(0)
signal.signal(signal.SIGTERM, bye)
os.write(ready_w, b"1")
while True:
    server.accept()[0].close()
"""

VIRSH = r"""
import os, socket, sys, urllib.parse
uri = sys.argv[sys.argv.index("-c") + 1]
query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
path = query.get("socket", [os.path.join(os.environ["FAKE_LIBVIRT_RUN"], "libvirt-sock")])[0]
try:
    socket.socket(socket.AF_UNIX).connect(path)
except OSError as exc:
    sys.exit(f"error: failed to connect to {path}: {exc}")
print(uri)
"""


def install(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in (("virtlogd", DAEMON), ("libvirtd", DAEMON), ("virsh", VIRSH)):
        program = bin_dir / name
        program.write_text(f"#!{sys.executable}\n{body}")
        program.chmod(0o755)
