"""sandbox/dial.py: the one dial loop (retry, health check, early stop, timeout) and addresses."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.proto import health_pb2
from kata_shim.proto.health_ttrpc import HealthBase
from kata_shim.sandbox.dial import (
    AGENT_VSOCK_PORT,
    DialPolicy,
    UnixAddress,
    VsockAddress,
    dial_agent,
)
from kata_shim.ttrpc.server import Server
from kata_shim.ttrpc.service import Dispatcher, RequestContext

pytestmark = pytest.mark.timeout(30)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health(HealthBase):
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses  # one per Check; the last one repeats
        self.calls = 0

    async def Check(
        self, ctx: RequestContext, request: health_pb2.CheckRequest
    ) -> health_pb2.HealthCheckResponse:
        status = self.statuses[min(self.calls, len(self.statuses) - 1)]
        self.calls += 1
        return health_pb2.HealthCheckResponse(status=status)


@asynccontextmanager
async def agent(path: Path, health: Health) -> AsyncIterator[Server]:
    dispatcher = Dispatcher()
    dispatcher.register(HealthBase.DESC, health)
    server = Server(dispatcher)
    await server.serve_unix(str(path))
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


def _silent(last: Exception | None) -> errors.ShimError:
    return errors.DeadlineExceeded(f"silent; last: {last}")


def _alive() -> None:
    return None


def test_addresses_name_themselves() -> None:
    unix = UnixAddress(Path("/run/x/agent.sock"))
    assert (unix.url(), str(unix)) == ("unix:///run/x/agent.sock", "/run/x/agent.sock")
    vsock = VsockAddress(7)
    assert vsock.url() == f"vsock://7:{AGENT_VSOCK_PORT}" == "vsock://7:1024"
    assert str(vsock) == "vhost-vsock CID 7 port 1024"


def test_dial_retries_until_the_agent_appears_and_serves() -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="sbx-dial-") as tmp:
            path = Path(tmp) / "agent.sock"
            health = Health([NOT_SERVING, SERVING])
            policy = DialPolicy(timeout=10, retry=0.01)

            async def late_agent() -> None:
                await asyncio.sleep(0.2)  # the first attempts find no socket
                async with agent(path, health):
                    await asyncio.sleep(3)

            task = asyncio.create_task(late_agent())
            client = await dial_agent(UnixAddress(path), policy, alive=_alive, silent=_silent)
            assert health.calls == 2  # NOT_SERVING was retried
            client.close()
            await client.wait_closed()
            task.cancel()

    asyncio.run(main())


def test_dial_gives_up_at_the_timeout_with_the_last_error() -> None:
    async def main() -> None:
        address = UnixAddress(Path("/nonexistent-sbx-dial/agent.sock"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(errors.DeadlineExceeded, match=r"silent; last: .*No such file"):
            await dial_agent(address, DialPolicy(0.3, 0.01), alive=_alive, silent=_silent)
        assert loop.time() - started < 2

    asyncio.run(main())


def test_dial_stops_early_when_the_sandbox_died() -> None:
    async def main() -> None:
        attempts = 0

        def alive() -> None:
            nonlocal attempts
            attempts += 1
            if attempts == 3:
                raise errors.Unavailable("the VM exited")

        address = UnixAddress(Path("/nonexistent-sbx-dial/agent.sock"))
        with pytest.raises(errors.Unavailable, match="the VM exited"):
            await dial_agent(address, DialPolicy(10, 0.01), alive=alive, silent=_silent)
        assert attempts == 3

    asyncio.run(main())
