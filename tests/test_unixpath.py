"""kata_shim/unixpath.py: unix sockets past the 107-byte sun_path, bound and dialled by alias."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from kata_shim import errors
from kata_shim.guest.channel import serve_channel
from kata_shim.guest.service import HealthService
from kata_shim.proto import health_pb2
from kata_shim.proto.health_ttrpc import HEALTH_DESC, HealthClient
from kata_shim.sandbox.dial import UnixAddress
from kata_shim.ttrpc.server import Server
from kata_shim.ttrpc.service import Dispatcher
from kata_shim.unixpath import SUN_PATH_MAX, short_address

pytestmark = pytest.mark.timeout(30)


def long_dir(tmp_path: Path) -> Path:
    """A directory whose `agent.sock` is well past the sun_path limit."""
    deep = tmp_path / ("fixes-state-root-" + "x" * 60) / ("f" * 64)
    deep.mkdir(parents=True)
    assert len(os.fsencode(deep / "agent.sock")) > SUN_PATH_MAX
    return deep


def test_a_path_that_fits_is_its_own_address(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    with short_address(path) as address:
        assert address == str(path)


def test_a_long_path_gets_a_short_alias_of_the_same_directory(tmp_path: Path) -> None:
    path = long_dir(tmp_path) / "agent.sock"
    with short_address(path) as address:
        assert address.startswith("/proc/self/fd/") and address.endswith("/agent.sock")
        assert len(os.fsencode(address)) <= SUN_PATH_MAX
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(address)
    assert path.exists() and path.is_socket()


def test_the_listener_and_the_dialler_meet_at_a_long_path(tmp_path: Path) -> None:
    path = long_dir(tmp_path) / "agent.sock"

    async def main() -> None:
        dispatcher = Dispatcher()
        dispatcher.register(HEALTH_DESC, HealthService())
        server = Server(dispatcher)
        assert await serve_channel(server, f"unix:{path}") is None
        try:
            assert path.is_socket() and (path.stat().st_mode & 0o777) == 0o600
            client = await UnixAddress(path).open()
            reply = await HealthClient(client).Check(health_pb2.CheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            client.close()
            await client.wait_closed()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_a_name_too_long_on_its_own_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / ("n" * 120 + ".sock")
    size = len(os.fsencode(path))
    with pytest.raises(errors.InvalidArgument) as caught, short_address(path):
        pytest.fail("no alias fits")
    message = caught.value.message
    assert str(path) in message and f"is {size} bytes" in message
    assert f"{SUN_PATH_MAX}-byte sun_path limit" in message
    assert "fix: use a shorter [runtime] state_dir" in message


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / ("m" * 110) / "agent.sock"
    expected = pytest.raises(errors.InvalidArgument, match="directory cannot be opened")
    with expected, short_address(path):
        pytest.fail("no directory to alias")


def test_the_alias_fd_is_closed_after_the_context(tmp_path: Path) -> None:
    path = long_dir(tmp_path) / "agent.sock"
    with short_address(path) as address:
        fd = int(address.split("/")[4])
        assert os.path.samestat(os.fstat(fd), path.parent.stat())
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
