"""Streaming Exec and Attach through containerd's CRI streaming server, for `runc` (the
reference), `kata-local` and `kata` (a QEMU VM under TCG).

The URLs CRI returns are opened with our WebSocket client (kata_shim.devenv.criexec,
subprotocol `v4.channel.k8s.io`), connected from inside the rig's netns where
the streaming server listens on 127.0.0.1. One pod per handler holds a shell
container (for Exec), a `cat` container with stdin open (for Attach) and one with
`stdin_once` (CRI closes its stdin, through the shim's CloseIO, when the first
attach ends); its teardown must leave nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kata_shim.devenv import ociimage
from kata_shim.devenv.cri import CriRig
from kata_shim.devenv.criclient import CriClient, container_config
from kata_shim.devenv.criexec import StreamSession, open_stream
from kata_shim.proto import cri_pb2
from tests.cri.conftest import check_tools
from tests.cri.podkit import Pod, leftovers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

IDLE = "trap 'exit 0' TERM; while :; do sleep 1; done"
ONCE = "cat; echo stdin-closed; exit 4"
# One line of stdin per round: is stdout a tty, the terminal size, a marker; `end` ends it.
TTY_LOOP = (
    'while read x; do [ -t 1 ] && echo tty:$x; stty size; echo done:$x; [ "$x" = end ] && exit 0; '
    "done"
)


@dataclass
class StreamPod:
    rig: CriRig
    client: CriClient
    handler: str
    shell: str  # a container that idles (Exec target)
    cat: str  # a container running `cat` with stdin kept open (Attach target)
    once: str  # `cat` with stdin_once, then a line and exit 4

    def open(self, url: str) -> StreamSession:
        assert url.startswith("http://127.0.0.1:"), url  # the rig's streaming server, no TLS
        return open_stream(url, connect=self.rig.stream_connect, timeout=120)


@pytest.fixture(scope="module")
def vm_cri_rig(guest_image: Path) -> Iterator[CriRig]:
    check_tools()
    with CriRig(prefix="cri-stream", guest_image=guest_image) as rig:
        yield rig


@pytest.fixture(
    scope="module",
    params=["runc", "kata-local", pytest.param("kata", marks=pytest.mark.slow)],
)
def stream_pod(request: pytest.FixtureRequest) -> Iterator[StreamPod]:
    handler: str = request.param
    rig: CriRig = request.getfixturevalue("vm_cri_rig" if handler == "kata" else "cri_rig")
    with CriClient(rig.cri_address) as client:
        pod = Pod(rig, client, handler, "stream")
        shell = pod.add("shell", IDLE)
        cat = add_stdin_container(pod, "cat", ["/bin/cat"], stdin_once=False)
        once = add_stdin_container(pod, "once", ["/bin/sh", "-c", ONCE], stdin_once=True)
        for container in (shell, cat, once):
            running = client.wait_container_state(container, cri_pb2.CONTAINER_RUNNING)
            assert running.state == cri_pb2.CONTAINER_RUNNING, running
        yield StreamPod(rig, client, handler, shell, cat, once)
        pod.teardown()
        assert leftovers(rig, client, [pod.id, shell, cat, once], timeout=30) == {}


def add_stdin_container(pod: Pod, name: str, args: list[str], *, stdin_once: bool) -> str:
    config = container_config(
        name,
        ociimage.BUSYBOX.name,
        args,
        log_path=f"{name}.log",
        stdin=True,
        stdin_once=stdin_once,
    )
    container_id = pod.client.create_container(pod.id, config, pod.config)
    pod.containers.append(container_id)
    pod.client.start_container(container_id)
    return container_id


def test_exec_stdin_stdout_stderr_and_exit_code(stream_pod: StreamPod) -> None:
    script = "read x; echo got:$x; echo err >&2; exit 3"
    url = stream_pod.client.exec(stream_pod.shell, ["/bin/sh", "-c", script], stdin=True)
    with stream_pod.open(url) as session:
        session.send_stdin(b"hello-stream\n")
        result = session.finish()
    assert (result.stdout, result.stderr) == (b"got:hello-stream\n", b"err\n"), result
    assert result.status["reason"] == "NonZeroExitCode", result.status
    assert result.exit_code == 3


def test_exec_success_reports_success(stream_pod: StreamPod) -> None:
    url = stream_pod.client.exec(stream_pod.shell, ["/bin/echo", "fine"])
    with stream_pod.open(url) as session:
        result = session.finish()
    assert (result.stdout, result.stderr, result.status["status"]) == (b"fine\n", b"", "Success")
    assert result.exit_code == 0


def test_exec_tty_with_resize(stream_pod: StreamPod) -> None:
    url = stream_pod.client.exec(
        stream_pod.shell, ["/bin/sh", "-c", TTY_LOOP], stdin=True, tty=True
    )
    with stream_pod.open(url) as session:
        session.resize(123, 45)  # applied asynchronously: ask again until the size shows
        for round_ in range(30):
            session.send_stdin(f"r{round_}\n".encode())
            output = session.read_until(f"done:r{round_}".encode())
            if b"45 123" in output:
                break
        session.send_stdin(b"end\n")
        result = session.finish()
    assert b"tty:r0\r\n" in result.stdout, result  # a terminal: CR LF line ends
    assert b"45 123" in result.stdout, result
    assert result.exit_code == 0


def test_attach_echoes_stdin_and_detaches(stream_pod: StreamPod) -> None:
    client = stream_pod.client
    for attempt in ("first", "second"):  # detaching leaves the container and its stdin alone
        with stream_pod.open(client.attach(stream_pod.cat)) as session:
            session.send_stdin(f"ping-{attempt}\n".encode())
            assert session.read_until(f"ping-{attempt}\n".encode()) == f"ping-{attempt}\n".encode()
        status = client.container_status(stream_pod.cat)
        assert status.state == cri_pb2.CONTAINER_RUNNING, status


def test_attach_stdin_once_closes_stdin_when_the_session_ends(stream_pod: StreamPod) -> None:
    client = stream_pod.client
    with stream_pod.open(client.attach(stream_pod.once)) as session:
        session.send_stdin(b"only-once\n")
        assert session.read_until(b"only-once\n") == b"only-once\n"
    # CRI's CloseIO reaches the container: `cat` sees EOF, the shell goes on and exits
    status = client.wait_container_state(stream_pod.once, cri_pb2.CONTAINER_EXITED, timeout=120)
    assert (status.state, status.exit_code) == (cri_pb2.CONTAINER_EXITED, 4), status
