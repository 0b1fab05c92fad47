"""An emulated iSulad daemon in its own process, so a test can kill it (`isula run -d`, then die).

Usage: python -m tests.isulad.daemon_child ROOT ID SPEC_JSON_FILE
Creates and starts the container with the environment it was given (the rig's),
prints "started <pid>" and then blocks: its Wait thread sits in shim_v2_wait
until the test SIGKILLs this process.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from tests.isulad.isulad import Isulad


def main(argv: list[str]) -> int:
    root, cid, spec_file = Path(argv[0]), argv[1], Path(argv[2])
    isulad = Isulad(root, dict(os.environ))
    isulad.create(cid, json.loads(spec_file.read_text()))
    pid = isulad.start(cid)
    sys.stdout.write(f"started {pid}\n")
    sys.stdout.flush()
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
