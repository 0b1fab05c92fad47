"""The emulator wrapper libvirt runs: written once per content, jail options from the domain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import pytest

from kata_shim.errors import FailedPrecondition
from kata_shim.sandbox.libvirt import emulator
from kata_shim.sandbox.libvirt.domain import QEMU_NS, DomainSpec, domain_xml
from kata_shim.sandbox.qemu.confine import QEMU_CAPS

QEMU = "/usr/bin/qemu-system-x86_64"


def test_the_wrapper_execs_qemu_under_the_jail_and_is_written_once(tmp_path: Path) -> None:
    directory = tmp_path / "emulators"
    path = emulator.install_wrapper(QEMU, directory)
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n") and f"{sys.executable} -I -c " in text
    assert text.rstrip().endswith(f'{QEMU} "$@"')
    st = path.stat()
    assert st.st_mode & 0o777 == 0o755 and directory.stat().st_mode & 0o777 == 0o755
    # same content, same file, untouched: libvirt's capability cache keys on its ctime
    assert emulator.install_wrapper(QEMU, directory) == path
    assert path.stat().st_ctime_ns == st.st_ctime_ns and path.stat().st_ino == st.st_ino
    other = emulator.install_wrapper("/bin/true", directory)
    assert other != path and sorted(p.name for p in directory.iterdir()) == sorted(
        [path.name, other.name]
    )
    done = subprocess.run([str(path), "-version"], capture_output=True, timeout=60)
    assert done.returncode == 0 and b"QEMU emulator version" in done.stdout, done.stderr


def test_the_wrapper_dir_is_traversable_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        path = emulator.install_wrapper(QEMU, tmp_path / "emulators")
    finally:
        os.umask(old)
    assert path.parent.stat().st_mode & 0o777 == 0o755 and path.stat().st_mode & 0o777 == 0o755


def test_a_wrapper_dir_others_can_write_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "emulators"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    with pytest.raises(FailedPrecondition, match="writable by nobody else"):
        emulator.install_wrapper(QEMU, directory)
    with pytest.raises(FailedPrecondition, match="not an executable"):
        emulator.install_wrapper("qemu-system-x86_64", tmp_path)


def test_main_passes_the_domains_jail_options_before_the_jails_separator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kata_shim.sandbox.qemu import jail

    calls: list[list[str]] = []
    monkeypatch.setattr(jail, "main", calls.append)
    monkeypatch.setattr(emulator, "drop_prefix", lambda status: ["setpriv", "--"])
    monkeypatch.setenv(emulator.JAIL_ENV, json.dumps(["--opt", "x y"]))
    emulator.main([QEMU, "-S", "-name", "guest=a"])
    assert calls == [["--opt", "x y", "--", "setpriv", "--", QEMU, "-S", "-name", "guest=a"]]
    assert emulator.JAIL_ENV not in os.environ  # QEMU does not see it
    emulator.main([QEMU])
    assert calls[-1] == ["--", "setpriv", "--", QEMU]
    monkeypatch.setenv(emulator.JAIL_ENV, '{"not": "a list"}')
    with pytest.raises(SystemExit, match="JSON list of strings"):
        emulator.main([QEMU])


def _status(effective: int, bounding: int) -> str:
    return f"Name:\tx\nCapInh:\t0\nCapEff:\t{effective:016x}\nCapBnd:\t{bounding:016x}\n"


def test_capabilities_are_dropped_to_qemus_only_when_there_is_more_to_drop() -> None:
    assert sum(1 << emulator.CAP_BITS[name] for name in QEMU_CAPS) == 0xF
    everything = (1 << 41) - 1
    prefix = emulator.drop_prefix(_status(everything, everything))  # libvirt's root QEMU
    assert prefix[0].endswith("/setpriv") and prefix[-1] == "--"
    assert prefix[1:-1] == [
        "--bounding-set=-all,+chown,+dac_override,+dac_read_search,+fowner",
        "--inh-caps=-all",
        "--no-new-privs",
    ]
    assert emulator.drop_prefix(_status(0, everything)) == []  # libvirt's probe, unprivileged
    assert emulator.drop_prefix(_status(everything, 0xF)) == []  # already confined


def _spec(**changes: object) -> DomainSpec:
    spec = DomainSpec(
        "kata-shim-x",
        "/run/kata-shim-emulators/qemu-jail-0",
        "/k",
        "/i",
        "console=ttyS0",
        512,
        1,
        "qemu",
        "pc",
        Path("/s/vm/console.log"),
        Path("/s/vm/agent.sock"),
        Path("/s/shared"),
    )
    return replace(spec, **changes)


def test_domain_xml_debug_console_and_jail_options() -> None:
    plain = ElementTree.fromstring(domain_xml(_spec()))
    assert plain.findtext("devices/emulator") == "/run/kata-shim-emulators/qemu-jail-0"
    assert [c.find("target").get("name") for c in plain.findall("devices/channel")] == [
        "agent.channel.0"
    ]
    assert plain.find(f"{{{QEMU_NS}}}commandline") is None  # no taint without options
    root = ElementTree.fromstring(
        domain_xml(_spec(console_socket=Path("/s/console.sock"), jail_options=("--a", "b c")))
    )
    channels = {
        c.find("target").get("name"): c.find("source").get("path")
        for c in root.findall("devices/channel")
    }
    assert channels == {"agent.channel.0": "/s/vm/agent.sock", "console.0": "/s/console.sock"}
    env = root.find(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}env")
    assert env.get("name") == emulator.JAIL_ENV
    assert json.loads(env.get("value")) == ["--a", "b c"]
