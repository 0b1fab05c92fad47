"""Regenerate the checked-in protobuf and ttrpc modules (`make proto`).

`python -m kata_shim.plugin.regen` rewrites kata_shim/proto/*_pb2.py, *_pb2.pyi
and *_ttrpc.py from the .proto files with grpcio-tools' protoc and our plugin.
`--check` generates into a scratch directory and fails (exit 1) when anything
differs from the checked-in files, which CI runs. Output is deterministic.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["check", "generate_into", "main"]

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "kata_shim" / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_ttrpc.py")


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in PROTO_DIR.glob("*.proto"))


def _plugin_launcher(scratch: Path) -> Path:
    """protoc wants an executable; this one runs our plugin module with this Python."""
    launcher = scratch / "protoc-gen-kata-ttrpc"
    launcher.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m kata_shim.plugin.protoc_gen_ttrpc "$@"\n'
    )
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    return launcher


def generate_into(out_dir: Path) -> None:
    """Run protoc over every kata_shim/proto/*.proto, writing below `out_dir`."""
    import grpc_tools  # a build/dev dependency only

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        launcher = _plugin_launcher(Path(scratch))
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{REPO}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--plugin=protoc-gen-kata-ttrpc={launcher}",
            f"--kata-ttrpc_out={out_dir}",
            *proto_files(),
        ]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        subprocess.run(cmd, check=True, cwd=REPO, env=env)


def _generated(directory: Path) -> dict[str, Path]:
    return {
        p.name: p
        for p in directory.iterdir()
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    }


def check() -> list[str]:
    """Return human-readable differences between fresh output and the checked-in files."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        generate_into(Path(scratch))
        fresh = _generated(Path(scratch) / "kata_shim" / "proto")
        current = _generated(PROTO_DIR)
        for name in sorted(set(fresh) | set(current)):
            if name not in current:
                problems.append(f"missing: kata_shim/proto/{name}")
            elif name not in fresh:
                problems.append(f"stale (no .proto generates it): kata_shim/proto/{name}")
            elif fresh[name].read_text() != current[name].read_text():
                diff = difflib.unified_diff(
                    current[name].read_text().splitlines(),
                    fresh[name].read_text().splitlines(),
                    f"checked-in/{name}",
                    f"regenerated/{name}",
                    lineterm="",
                    n=1,
                )
                problems.append("\n".join(list(diff)[:20]))
    return problems


def regenerate() -> None:
    for old in _generated(PROTO_DIR).values():
        old.unlink()
    with tempfile.TemporaryDirectory() as scratch:
        generate_into(Path(scratch))
        for name, path in _generated(Path(scratch) / "kata_shim" / "proto").items():
            shutil.copyfile(path, PROTO_DIR / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kata_shim.plugin.regen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if regeneration changes files")
    args = parser.parse_args(argv)
    if not args.check:
        regenerate()
        print(f"regenerated {len(proto_files())} .proto files into {PROTO_DIR}")
        return 0
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("generated code is stale: run `make proto`", file=sys.stderr)
        return 1
    print(f"generated code is up to date ({len(proto_files())} .proto files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
