"""An emulated iSulad daemon in its own process, so a test can kill it (`isula run -d`, then die).

Usage: python -m tests.isulad.daemon_child ROOT ID SPEC_JSON_FILE [ID SPEC_JSON_FILE ...]
Creates and starts the containers in order with the environment it was given (the
rig's), prints "started <pid>" and then blocks: its Wait threads sit in shim_v2_wait
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
    isulad = Isulad(Path(argv[0]), dict(os.environ))
    pid = 0
    for cid, spec_file in zip(argv[1::2], argv[2::2], strict=True):
        isulad.create(cid, json.loads(Path(spec_file).read_text()))
        pid = isulad.start(cid)
    sys.stdout.write(f"started {pid}\n")
    sys.stdout.flush()
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
