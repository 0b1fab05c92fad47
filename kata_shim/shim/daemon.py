"""The shim daemon's event-loop side: publisher, TaskService, ttrpc server, signals.

Under uvloop: build the publisher and the TaskService, serve ttrpc on fd 3 (or
`-socket PATH`) to same-uid peers only, and wait for one of
  * the service's on_shutdown (Shutdown with no task left: the reply is
    already written when we wake — it is sent in the same loop step), or
  * SIGTERM / SIGINT (the service is closed: running processes exit 255).
Teardown: close the service, stop serving, flush the publisher (bounded),
remove our socket if it is still the file we were started on (same inode:
`start` replaces a dead shim's socket with a new file; the bundle, and with
it `./address`, may already be gone — iSulad removes a pod sandbox's bundle
while the pod's containers still use its shim). Heavy imports (uvloop, protobuf,
the task service) live here; serve.py imports this module after logging is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

from kata_shim.events.publisher import Publisher, make_publisher
from kata_shim.metrics.observer import ShimObserver
from kata_shim.proto.task_ttrpc import TASK_DESC
from kata_shim.shim.flags import Flags
from kata_shim.shim.runtime import ShimRuntime, exit_fifo_dir
from kata_shim.task.profile import client_profile
from kata_shim.task.service import TaskService
from kata_shim.ttrpc.server import Server
from kata_shim.ttrpc.service import Dispatcher

__all__ = ["Daemon"]

log = logging.getLogger(__name__)

LISTEN_FD = 3
CLOSE_TIMEOUT = 20.0  # service.close() is itself bounded by the teardown timeout
PUBLISHER_FLUSH = 5.0


class Daemon:
    """One serve run: the service, the server, and why we are stopping."""

    def __init__(self, flags: Flags, bundle: str, early_signals: list[int] | None = None) -> None:
        self.flags = flags
        self.early_signals = early_signals if early_signals is not None else []
        self.bundle = bundle
        self.stopping = asyncio.Event()
        self.signalled: int | None = None
        self.listen_path: str | None = None
        self._socket_file: tuple[int, int] | None = None  # (st_dev, st_ino) of listen_path
        #: metrics and the per-sandbox management endpoints (kata_shim.metrics)
        self.observer = ShimObserver(os.getpid())

    def _on_signal(self, signum: int) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        self.signalled = signum
        self.stopping.set()

    def _on_shutdown(self) -> None:
        log.info("Shutdown with no task left: exiting")
        self.stopping.set()

    def _build(self) -> tuple[Publisher, TaskService, Server]:
        flags = self.flags
        publisher = make_publisher(
            flags.namespace,
            os.environ.get("TTRPC_ADDRESS") or None,
            flags.publish_binary or None,
            flags.address or None,
        )
        runtime = ShimRuntime(self.bundle, debug=flags.debug)
        service = TaskService(
            namespace=flags.namespace,
            publisher=publisher,
            provider_loader=runtime.load,
            on_shutdown=self._on_shutdown,
            shim_pid=os.getpid(),
            # containerd always passes -address; iSulad (lib-shim-v2) never does
            profile=client_profile(lib_shim_v2=not flags.address, exit_fifo_dir=exit_fifo_dir()),
            observer=self.observer,
        )
        self.observer.metrics.task_states = service.process_states
        dispatcher = Dispatcher()
        dispatcher.register(TASK_DESC, service)
        return (
            publisher,
            service,
            Server(dispatcher, require_same_uid=True, observer=self.observer.rpc),
        )

    async def _listen(self, server: Server) -> None:
        if self.flags.socket:
            await server.serve_unix(self.flags.socket)
            self.listen_path = self.flags.socket
            return
        sock = socket.socket(fileno=LISTEN_FD)
        name = sock.getsockname()
        self.listen_path = name if isinstance(name, str) and name else None
        self._socket_file = _file_id(self.listen_path)
        await server.serve_socket(sock)

    async def run(self) -> None:
        publisher, service, server = self._build()
        await self._listen(server)
        loop = asyncio.get_running_loop()
        log.info("serving on %s (pid %d)", self.listen_path or f"fd {LISTEN_FD}", os.getpid())
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        if self.early_signals:  # arrived while we were importing
            self._on_signal(self.early_signals[0])
        try:
            await self.stopping.wait()
        finally:
            await self._teardown(publisher, service, server)

    async def _teardown(self, publisher: Publisher, service: TaskService, server: Server) -> None:
        try:
            await asyncio.wait_for(service.close(), CLOSE_TIMEOUT)
        except Exception:
            log.exception("closing the task service failed")
        server.close()
        self.observer.close()
        self._remove_socket()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2.0)
        try:
            await publisher.close(PUBLISHER_FLUSH)
        except Exception:
            log.exception("closing the event publisher failed")

    def _remove_socket(self) -> None:
        """Unlink our socket (-socket, or the file `start` bound for us if it still is)."""
        path = self.listen_path
        if not path:
            return
        if self.flags.socket or (
            self._socket_file is not None and _file_id(path) == self._socket_file
        ):
            with contextlib.suppress(OSError):
                os.unlink(path)


def _file_id(path: str | None) -> tuple[int, int] | None:
    if not path:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino
