"""Rewrite the console scripts `setup.py install` wrote into plain entry-point wrappers.

setup.py install (what %py3_install runs) writes easy_install-style scripts
that look the distribution up with importlib.metadata on every run, scanning
sys.path: about 45 ms per call on a 10 ms interpreter start. containerd runs
`containerd-shim-kata-v2 start` and `delete` for every container, so the RPM
ships the same wrappers pip writes instead:

    python3 console-scripts.py <bindir> <entry_points.txt> <interpreter>
"""

import configparser
import os
import sys

TEMPLATE = """#!{interpreter}
import sys

from {module} import {function}

if __name__ == "__main__":
    sys.exit({function}())
"""


def main(bindir: str, entry_points: str, interpreter: str) -> int:
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # keep script names as written
    parser.read(entry_points)
    for name, target in parser.items("console_scripts"):
        path = os.path.join(bindir, name)
        if not os.path.exists(path):
            continue  # removed by the spec (development-only tools)
        module, _, function = target.strip().partition(":")
        with open(path, "w") as script:
            script.write(TEMPLATE.format(interpreter=interpreter, module=module, function=function))
        os.chmod(path, 0o755)
        print(f"{path}: {module}:{function}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
