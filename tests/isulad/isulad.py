"""An emulation of iSulad's shim v2 backend (shim_rt_ops.c, shim_rt_monitor.cc, supervisor.c).

Directories as iSulad lays them out under `root` (graph = root/lib, state = root/run):
  bundle  = <graph>/engines/<runtime>/<id>   config.json, a regular-file `log`, `address`
  state   = <state>/<runtime>/<id>           exit_fifo, stdio FIFOs per operation
and EXIT_FIFO_DIR = <state>/<runtime> for the shim.

Operations (each the rt_shim_* function of the same meaning):
  create   `containerd-shim-kata-v2 --id <id> --namespace isula start` (cwd bundle, setsid,
           stdin /dev/null, stdout/stderr non-blocking pipes read ONCE after the exit, address
           untrimmed), shim_v2_new, shim_v2_create, then `<bundle>/address` (0640)
  start    shim_v2_start + the monitor thread (shim_v2_wait → 4-byte write to exit_fifo)
  exec     Exec(JSON Process Any) + Start + (foreground) Wait
  stop     Kill(SIGTERM), wait for the supervisor up to `timeout`, then Kill(SIGKILL)
  clean    what the supervisor does after reading the exit fifo: Kill(0) probe; alive →
           Kill(9) and retry (10 x 100 ms); gone → Delete + Shutdown + rm -rf state dir
  rm       rm -rf bundle;  restore: `<bundle>/address` → new conn → State → monitor again
Every lib-shim-v2 call is recorded in `calls` as (function, id, "ok" | error) for assertions.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.isulad import libshimv2 as lib
from tests.isulad.fifos import ExitFifo, OutputFifo, write_exit_fifo

__all__ = ["RUNTIME", "Container", "Isulad", "ShimStartError"]

RUNTIME = "io.containerd.kata.v2"
SHIM_BINARY = "containerd-shim-kata-v2"  # convert_v2_runtime("io.containerd.kata.v2")
PATH_MAX, BUFSIZ = 4096, 8192
T = TypeVar("T")


class ShimStartError(RuntimeError):
    """`start` failed: "shim-v2 binary %d exit in %d with %s, %s"."""


@dataclass
class Container:
    id: str
    bundle: Path
    state: Path
    exit_fifo: ExitFifo | None = None
    outputs: dict[str, OutputFifo] = field(default_factory=dict)
    pid: int = 0
    start_stdout: bytes = b""
    start_stderr: bytes = b""
    monitor: threading.Thread | None = None
    monitor_status: int | None = None
    cleaned: threading.Event = field(default_factory=threading.Event)

    def output(self, name: str = "out") -> str:
        return self.outputs[name].text()


class Isulad:
    """One emulated iSulad daemon process (lib-shim-v2's global map is per process)."""

    def __init__(
        self,
        root: Path,
        env: Mapping[str, str],
        *,
        auto_clean: bool = True,
        wait_monitor: bool = True,
    ) -> None:
        self.root = root
        self.engines = root / "lib" / "engines" / RUNTIME  # rootpath
        self.statepath = root / "run" / RUNTIME  # EXIT_FIFO_DIR
        self.engines.mkdir(parents=True, exist_ok=True)
        self.statepath.mkdir(parents=True, exist_ok=True)
        self.env = {**env, "EXIT_FIFO_DIR": str(self.statepath)}
        for name in ("TTRPC_ADDRESS", "GRPC_ADDRESS", "NAMESPACE", "MAX_SHIM_VERSION"):
            self.env.pop(name, None)
        self.auto_clean = auto_clean
        #: False = iSulad before 2023-08: no Wait thread, only the shim's EXIT_FIFO_DIR write
        self.wait_monitor = wait_monitor
        self.containers: dict[str, Container] = {}
        self.calls: list[tuple[str, str, str]] = []
        self._calls_lock = threading.Lock()
        self._tid = 0

    # bookkeeping -----------------------------------------------------------------------
    def call(self, name: str, cid: str, func: Callable[..., T], *args: Any) -> T:
        """Run one shim_v2_* function and record its outcome."""
        try:
            result = func(cid, *args)
        except Exception as exc:
            self._record(name, cid, f"{type(exc).__name__}: {exc}")
            raise
        self._record(name, cid, "ok")
        return result

    def _record(self, name: str, cid: str, outcome: str) -> None:
        with self._calls_lock:
            self.calls.append((name, cid, outcome))

    def outcomes(self, name: str, cid: str) -> list[str]:
        with self._calls_lock:
            return [o for n, c, o in self.calls if n == name and c == cid]

    def _fifo_dir(self, container: Container, operation: str) -> Path:
        self._tid += 1
        now = time.time_ns()
        path = container.state / operation / f"{self._tid}_{now // 10**9}_{now % 10**9}"
        path.mkdir(parents=True)
        return path

    # create / start ----------------------------------------------------------------------
    def create(
        self,
        cid: str,
        spec: Mapping[str, Any],
        *,
        stdio: bool = True,
        terminal: bool = False,
        task_address: str = "",
    ) -> Container:
        """rt_shim_create; with `task_address` (the sandbox API's params->task_addr) no `start`."""
        container = Container(cid, self.engines / cid, self.statepath / cid)
        container.bundle.mkdir(parents=True, exist_ok=True)  # `isula start` again: reused
        (container.bundle / "config.json").write_text(json.dumps(spec))
        log = os.open(container.bundle / "log", os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o640)
        os.close(log)
        container.state.mkdir(parents=True, exist_ok=True)
        self.containers[cid] = container
        out = err = ""
        if stdio:
            fifo_dir = self._fifo_dir(container, "create")
            container.outputs["out"] = OutputFifo(fifo_dir / "out-fifo")
            out = str(fifo_dir / "out-fifo")
            if not terminal:  # a console merges stderr into stdout
                container.outputs["err"] = OutputFifo(fifo_dir / "err-fifo")
                err = str(fifo_dir / "err-fifo")
        address = task_address or self.launch_start(container)
        self.call("new", cid, lib.shim_v2_new, address)
        bundle = str(container.bundle)
        args = (bundle, terminal, "", out, err)
        try:
            container.pid = self.call("create", cid, lib.shim_v2_create, *args)
        except Exception:
            with contextlib.suppress(Exception):  # all iSulad does after a failed Create
                self.kill(cid, signal.SIGKILL)
            raise
        self._save_address(container, address)
        return container

    def launch_start(self, container: Container) -> str:
        """shim_bin_v2_create: run `start`, wait for it, one non-blocking read of each pipe."""
        argv = [SHIM_BINARY, "--id", container.id, "--namespace", "isula", "start"]
        proc = subprocess.Popen(
            argv,
            cwd=container.bundle,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        for pipe in (proc.stdout, proc.stderr):
            flags = fcntl.fcntl(pipe.fileno(), fcntl.F_GETFL)
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETFL, flags | os.O_NONBLOCK)
        try:
            status = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ShimStartError(f"shim-v2 binary {proc.pid} did not exit within 30 s") from None
        container.start_stdout = _read_once(proc.stdout.fileno(), PATH_MAX)
        container.start_stderr = _read_once(proc.stderr.fileno(), BUFSIZ)
        proc.stdout.close()
        proc.stderr.close()
        if status != 0:
            raise ShimStartError(
                f"shim-v2 binary {proc.pid} exit in {status} with "
                f"{container.start_stdout!r}, {container.start_stderr!r}"
            )
        return container.start_stdout.decode()  # verbatim: no trimming

    @staticmethod
    def _save_address(container: Container, address: str) -> None:
        temp = container.bundle / ".address.tmp"
        fd = os.open(temp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o640)
        with os.fdopen(fd, "w") as handle:
            handle.write(address)
        temp.rename(container.bundle / "address")

    def start(self, cid: str) -> int:
        """rt_shim_start: the exit fifo reader (supervisor) before Start, the monitor after."""
        container = self.containers[cid]
        if container.exit_fifo is None:
            container.exit_fifo = ExitFifo(container.state)
            self._watch_exit(container)
        pid = self.call("start", cid, lib.shim_v2_start, None)
        if self.wait_monitor:
            self.monitor(container)
        return pid

    def monitor(self, container: Container) -> None:
        """ShimV2onitor::MonitorThread: Wait(""), then the 4-byte write into exit_fifo."""

        def run() -> None:
            try:
                status = self.call("wait", container.id, lib.shim_v2_wait, None)
            except Exception:
                return
            container.monitor_status = status
            write_exit_fifo(container.state / "exit_fifo", status)

        container.monitor = threading.Thread(target=run, daemon=True)
        container.monitor.start()

    def _watch_exit(self, container: Container) -> None:
        """supervisor_exit_cb → clean_resources_thread, in the background."""

        def run() -> None:
            assert container.exit_fifo is not None
            while container.exit_fifo.wait(0.5) is None:
                if container.exit_fifo.done.is_set():  # closed (daemon "restart")
                    return
            if self.auto_clean:
                self.clean(container.id)

        threading.Thread(target=run, daemon=True).start()

    # operations ----------------------------------------------------------------------------
    def exec(
        self,
        cid: str,
        exec_id: str,
        args: list[str],
        *,
        detach: bool = False,
        tty: tuple[int, int] | None = None,
    ) -> tuple[int | None, str, str]:
        """rt_shim_exec: Exec, Start, and for a foreground exec Wait (its code goes to the CLI).
        `tty=(height, width)`: `isula exec -t`, resized (ResizePty) right after Start."""
        container = self.containers[cid]
        fifo_dir = self._fifo_dir(container, "exec")
        terminal = tty is not None
        out = OutputFifo(fifo_dir / "out-fifo")
        err = None if terminal else OutputFifo(fifo_dir / "err-fifo")  # a console merges them
        process = {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=isula"],
            "cwd": "/",
        }
        spec = json.dumps(process).encode()
        try:
            paths = (str(out.path), "" if err is None else str(err.path))
            self.call("exec", cid, lib.shim_v2_exec, exec_id, terminal, "", *paths, spec)
            self.call("start", cid, lib.shim_v2_start, exec_id)
            if tty is not None:
                self.call("resize", cid, lib.shim_v2_resize_pty, exec_id, *tty)
            if detach:  # `isula exec -d`: no Wait, nobody attached
                return None, "", ""
            code = self.call("wait", cid, lib.shim_v2_wait, exec_id)
            return code, out.text(), "" if err is None else err.text()
        finally:
            out.close()
            if err is not None:
                err.close()

    def detect_process(self, cid: str) -> bool:
        """rt_shim_detect_process: Kill(0); True while the init lives."""
        try:
            self.call("kill", cid, lib.shim_v2_kill, None, 0, False)
        except Exception:
            return False
        return True

    def kill(self, cid: str, sig: int) -> None:
        self.call("kill", cid, lib.shim_v2_kill, None, sig, False)

    def stop(self, cid: str, timeout: float = 10.0) -> int | None:
        """isula stop: SIGTERM, wait for the exit (supervisor), then SIGKILL and wait again."""
        container = self.containers[cid]
        assert container.exit_fifo is not None
        with contextlib.suppress(Exception):
            self.kill(cid, signal.SIGTERM)
        status = container.exit_fifo.wait(timeout)
        if status is None:
            with contextlib.suppress(Exception):
                self.kill(cid, signal.SIGKILL)
            status = container.exit_fifo.wait(30)
        return status

    def clean(self, cid: str) -> None:
        """clean_resources_thread + rt_shim_clean_resource."""
        container = self.containers[cid]
        for _ in range(11):
            if not self.detect_process(cid):
                break
            with contextlib.suppress(Exception):
                self.kill(cid, signal.SIGKILL)
            time.sleep(0.1)
        else:
            container.cleaned.set()
            return  # → GC in iSulad; tests see that no Delete was sent
        with contextlib.suppress(Exception):
            self.call("delete", cid, lib.shim_v2_delete, None)
        with contextlib.suppress(Exception):
            self.call("shutdown", cid, lib.shim_v2_shutdown)
        for output in container.outputs.values():
            output.close()
        if container.exit_fifo is not None:
            container.exit_fifo.close()
        shutil.rmtree(container.state, ignore_errors=True)
        container.cleaned.set()

    def resize(self, cid: str, height: int, width: int) -> None:
        """rt_shim_resize: the container's console (exec id "")."""
        self.call("resize", cid, lib.shim_v2_resize_pty, None, height, width)

    def pause(self, cid: str) -> None:
        self.call("pause", cid, lib.shim_v2_pause)

    def resume(self, cid: str) -> None:
        self.call("resume", cid, lib.shim_v2_resume)

    def state(self, cid: str) -> lib.State:
        return self.call("state", cid, lib.shim_v2_state)

    def stats(self, cid: str) -> lib.Stats:
        return self.call("stats", cid, lib.shim_v2_stats)

    def top(self, cid: str) -> int:
        return self.call("pids", cid, lib.shim_v2_pids)

    def rm(self, cid: str) -> None:
        """rt_shim_rm: the bundle goes (the shim was already deleted and shut down by clean)."""
        container = self.containers.pop(cid)
        shutil.rmtree(container.bundle, ignore_errors=True)

    def restore(self, cid: str) -> lib.State:
        """After an iSulad restart (rt_shim_status): address file → new conn → State → monitor."""
        container = self.containers.get(cid) or Container(
            cid, self.engines / cid, self.statepath / cid
        )
        self.containers[cid] = container
        address = (container.bundle / "address").read_text()
        self.call("new", cid, lib.shim_v2_new, address)
        state = self.state(cid)
        container.exit_fifo = ExitFifo(container.state)
        self._watch_exit(container)
        self.monitor(container)
        return state

    def close(self) -> None:
        """Drop every connection and thread of this 'daemon' (what its death would do)."""
        for container in self.containers.values():
            for output in container.outputs.values():
                output.close()
            if container.exit_fifo is not None:
                container.exit_fifo.close()
            lib.shim_v2_close(container.id)
        lib.close_stale()


def _read_once(fd: int, limit: int) -> bytes:
    try:
        return os.read(fd, limit)
    except BlockingIOError:
        return b""
