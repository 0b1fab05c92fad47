"""The framing, connection and dispatch layers must not depend on asyncio."""

from __future__ import annotations

import subprocess
import sys

SANS_IO = ["kata_shim.ttrpc.wire", "kata_shim.ttrpc.connection", "kata_shim.ttrpc.service"]


def test_sans_io_modules_do_not_import_asyncio() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in SANS_IO)
        + "import kata_shim.ttrpc\n"
        + "bad = [m for m in sys.modules if m == 'asyncio' or m.startswith('asyncio.')]\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"asyncio imported by sans-IO layer: {out.stdout}"
