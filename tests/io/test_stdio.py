"""Host stdio (fifo, file://, binary://), non-blocking sinks and the agent pumps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.agent.client import AgentClient
from kata_shim.io.pumps import Pumps
from kata_shim.io.stdio import Sink, open_host_stdio
from kata_shim.proto import agent_pb2
from kata_shim.proto.agent_ttrpc import AgentServiceClient
from kata_shim.ttrpc.client import Client
from tests.fakes.agent import FakeAgent, Program
from tests.task.harness import run_on

pytestmark = [pytest.mark.timeout(20)]


async def open_stdio(**kw: str | bool):  # type: ignore[no-untyped-def]
    defaults: dict[str, str | bool] = {"stdin": "", "stdout": "", "stderr": "", "terminal": False}
    defaults.update(kw)
    return await open_host_stdio(
        str(defaults["stdin"]),
        str(defaults["stdout"]),
        str(defaults["stderr"]),
        terminal=bool(defaults["terminal"]),
        container_id="c1",
        namespace="ns1",
    )


@pytest.mark.asyncio
async def test_fifos_open_without_a_peer_and_writes_reach_the_reader(tmp_path: Path) -> None:
    stdin, stdout = tmp_path / "in", tmp_path / "out"
    os.mkfifo(stdin)
    os.mkfifo(stdout)
    host = await asyncio.wait_for(open_stdio(stdin=str(stdin), stdout=str(stdout)), 1)
    assert host.stdin_fd is not None and host.stdout is not None and host.stderr is None
    reader = os.open(stdout, os.O_RDONLY | os.O_NONBLOCK)
    await host.stdout.write(b"hello")
    assert os.read(reader, 10) == b"hello"
    await host.close()
    assert os.read(reader, 10) == b""  # our O_RDWR end closed: EOF
    os.close(reader)


@pytest.mark.asyncio
async def test_file_uri_appends_and_stdout_stderr_share_one_fd(tmp_path: Path) -> None:
    log = tmp_path / "sub" / "log.txt"
    for text in (b"one ", b"two "):
        host = await open_stdio(stdout=f"file://{log}", stderr=f"file://{log}")
        assert host.stdout is host.stderr
        assert host.stdout is not None
        await host.stdout.write(text)
        await host.close()
    assert log.read_bytes() == b"one two "


@pytest.mark.asyncio
async def test_bad_locations_are_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidArgument):
        await open_stdio(stdout=str(tmp_path / "missing"))
    with pytest.raises(errors.InvalidArgument):
        await open_stdio(stdout="http://example.invalid/x")
    with pytest.raises(errors.InvalidArgument):
        await open_stdio(stdin=f"file://{tmp_path}/x")


LOGGER = """\
import json, os, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
out, err = args["out"], args["err"]
env = {k: v for k, v in os.environ.items()}
os.close(5)  # ready
with open(out, "wb") as o:
    while chunk := os.read(3, 65536):
        o.write(chunk)
with open(err, "wb") as e:
    while chunk := os.read(4, 65536):
        e.write(chunk)
with open(out + ".meta", "w") as m:
    json.dump({"argv": sys.argv[1:], "env": env}, m)
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_binary_uri_spawns_the_logger_with_containerds_fds_and_env(
    tmp_path: Path, loop: str
) -> None:
    run_on(loop, _binary_logger(tmp_path))


async def _binary_logger(tmp_path: Path) -> None:
    script = tmp_path / "logger"
    script.write_text(f"#!{sys.executable}\n{LOGGER}")
    script.chmod(0o755)
    out, err = tmp_path / "out", tmp_path / "err"
    uri = f"binary://{script}?mode=test&out={out}&err={err}"
    host = await open_stdio(stdout=uri, stderr=uri)
    assert host.logger is not None and host.stdout is not None and host.stderr is not None
    await host.stdout.write(b"to stdout")
    await host.stderr.write(b"to stderr")
    await host.close()
    assert out.read_bytes() == b"to stdout" and err.read_bytes() == b"to stderr"
    meta = json.loads(Path(f"{out}.meta").read_text())
    assert meta["argv"] == ["mode", "test", "out", str(out), "err", str(err)]
    assert meta["env"] == {"CONTAINER_ID": "c1", "CONTAINER_NAMESPACE": "ns1"} | {
        k: v for k, v in meta["env"].items() if k.startswith("LC_")
    }


@pytest.mark.asyncio
async def test_sink_gives_up_on_a_stalled_reader_and_on_abort(tmp_path: Path) -> None:
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # never reads
    try:
        stalled = Sink(os.open(fifo, os.O_RDWR | os.O_NONBLOCK), "stalled", stall_timeout=0.2)
        await asyncio.wait_for(stalled.write(b"x" * 2_000_000), 2)
        assert stalled.discarding
        stalled.release()
        aborted = Sink(os.open(fifo, os.O_RDWR | os.O_NONBLOCK), "aborted", stall_timeout=60)
        writing = asyncio.create_task(aborted.write(b"y" * 2_000_000))
        await asyncio.sleep(0.1)
        assert not writing.done()
        aborted.abort()
        await asyncio.wait_for(writing, 1)
        aborted.release()
    finally:
        os.close(reader)


@contextlib.asynccontextmanager
async def agent_with(program: Program) -> AsyncIterator[tuple[FakeAgent, AgentClient]]:
    agent = FakeAgent()
    agent.programs["p"] = program
    with tempfile.TemporaryDirectory(prefix="ks-io-") as tmp:
        await agent.serve(f"{tmp}/agent.sock")
        client = await Client.connect_unix(f"{tmp}/agent.sock", timeout=5)
        stub = AgentServiceClient(client)
        spec = agent_pb2.CreateContainerRequest(container_id="c1", exec_id="c1")
        spec.OCI.Process.Args.append("p")
        await stub.CreateContainer(spec)
        try:
            yield agent, AgentClient(client)
        finally:
            client.close()
            await client.wait_closed()
            await agent.shutdown()


@pytest.mark.asyncio
async def test_stdin_waits_for_a_writer_then_forwards_everything_before_close(
    tmp_path: Path,
) -> None:
    async with agent_with(Program(echo_stdin=True)) as (agent, client):
        stdin = tmp_path / "in"
        os.mkfifo(stdin)
        host = await open_stdio(stdin=str(stdin))
        pumps = Pumps(client, "c1", "c1", host, terminal=False)
        pumps.start()
        await client.start("c1")
        await asyncio.sleep(0.2)  # no writer yet: that is not EOF
        assert "CloseStdin" not in agent.names()
        writer = os.open(stdin, os.O_WRONLY)
        os.write(writer, b"abc" * 10000)
        os.close(writer)
        await asyncio.wait_for(pumps.drained(), 5)
        await pumps.close()
        proc = agent.containers["c1"].init
        assert bytes(proc.stdin) == b"abc" * 10000
        names = [n for n in agent.names() if n in ("WriteStdin", "CloseStdin")]
        assert names[-1] == "CloseStdin" and names.count("CloseStdin") == 1


@pytest.mark.asyncio
async def test_abort_bounds_the_drain_when_the_reader_stalls(tmp_path: Path) -> None:
    async with agent_with(Program(stdout=b"z" * 3_000_000, runtime=None)) as (agent, client):
        out = tmp_path / "out"
        os.mkfifo(out)
        reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
        try:
            host = await open_stdio(stdout=str(out))
            pumps = Pumps(client, "c1", "c1", host, terminal=False)
            pumps.start()
            await client.start("c1")
            await asyncio.sleep(0.2)
            agent.containers["c1"].init.finish(137)  # SIGKILLed; the reader never drains
            pumps.abort(0.1, 1.0)
            await asyncio.wait_for(pumps.drained(), 3)
            assert host.stdout is not None and host.stdout.discarding
            await pumps.close()
        finally:
            os.close(reader)
