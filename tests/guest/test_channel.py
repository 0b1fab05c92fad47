"""Agent listener specs and virtio-serial port discovery."""

from __future__ import annotations

import pytest

from kata_shim import errors
from kata_shim.guest.channel import find_virtio_port, parse_listen
from kata_shim.guest.main import listen_from_cmdline


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("unix:/run/a.sock", ("unix", "/run/a.sock")),
        ("vport:agent.channel.0", ("vport", "agent.channel.0")),
        ("vsock:1024", ("vsock", "1024")),
    ],
)
def test_parse_listen(spec, parsed) -> None:
    assert parse_listen(spec) == parsed


@pytest.mark.parametrize("bad", ["", "unix:", "tcp:1.2.3.4:5", "vsock:abc", "/path"])
def test_parse_listen_rejects(bad) -> None:
    with pytest.raises(errors.InvalidArgument):
        parse_listen(bad)


def test_find_virtio_port_by_name(tmp_path) -> None:
    for port, name in (("vport0p0", "org.qemu.guest_agent"), ("vport0p1", "agent.channel.0")):
        (tmp_path / port).mkdir()
        (tmp_path / port / "name").write_text(name + "\n")
    assert str(find_virtio_port("agent.channel.0", root=tmp_path)) == "/dev/vport0p1"
    with pytest.raises(FileNotFoundError):
        find_virtio_port("missing", root=tmp_path, timeout=0.1)


def test_listen_from_kernel_cmdline() -> None:
    assert (
        listen_from_cmdline("quiet kata_shim.agent=vport:agent.channel.0 x")
        == "vport:agent.channel.0"
    )
    assert listen_from_cmdline("agent.server_addr=vsock:1024") == "vsock:1024"
    assert listen_from_cmdline("console=ttyS0") is None
