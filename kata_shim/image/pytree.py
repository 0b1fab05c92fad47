"""The guest's Python runtime: interpreter, the stdlib it needs, our package, libraries.

The module set is discovered, not guessed: a child Debian python3.11 imports
the guest entry modules and we collect `sys.modules`. Stdlib modules become
sourceless .pyc files (unchecked-hash, so output is reproducible); C extensions
and the interpreter are copied with every shared library `ldd` reports (the ELF
interpreter to its hard-coded path). kata_shim, protobuf and the cffi backend
go to /opt/kata-shim/lib (the guest's PYTHONPATH) with their unchecked-hash
__pycache__ (the guest runs with PYTHONDONTWRITEBYTECODE).
"""

from __future__ import annotations

import importlib.util
import json
import py_compile
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GUEST_IMPORTS", "PythonPlan", "install_binary", "plan_python"]

PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
GUEST_LIB = "opt/kata-shim/lib"
# What the guest runs: the agent (once it exists) and the native self-tests.
GUEST_IMPORTS = (
    # interpreter start-up and `python -m`
    "site",
    "runpy",
    "importlib.util",
    "importlib.machinery",
    "importlib.abc",
    "_sitebuiltins",
    "asyncio",
    "json",
    "socket",
    "struct",
    "subprocess",
    "signal",
    "select",
    "threading",
    "logging",
    "argparse",
    "base64",
    "hashlib",
    "time",
    "errno",
    "fcntl",
    "shutil",
    "tempfile",
    "traceback",
    "dataclasses",
    "typing",
    "enum",
    "functools",
    "contextlib",
    "io",
    "uuid",
    "random",
    "ctypes",
    "termios",
    "tty",
    "pty",
    "pathlib",
    "selectors",
    "encodings.idna",
    "concurrent.futures.thread",
    "kata_shim.native.selftest",
    "kata_shim.debugconsole.guest",
    "kata_shim.ttrpc.server",
    "kata_shim.ttrpc.client",
    "kata_shim.proto.agent_ttrpc",
    "kata_shim.proto.health_ttrpc",
    "kata_shim.io.copy",
    "kata_shim.guest.netconf",  # pulls in pyroute2 (pod networking; imported lazily)
    "google.protobuf",
)
# Imported by the probe only because asyncio tries them; left out of the guest so
# the agent does not load OpenSSL at every start (it never uses TLS; asyncio runs
# without ssl).
GUEST_LEAVES_OUT = ("ssl.py", "_ssl.")


@dataclass(frozen=True, slots=True)
class PythonPlan:
    stdlib_files: list[Path]  # .py under STDLIB → sourceless .pyc
    extensions: list[Path]  # lib-dynload .so files
    site_roots: dict[str, Path]  # top-level name in GUEST_LIB → source path


_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        raise SystemExit(f"guest import {name} failed: {exc}")
files = sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())} - {""})
print(json.dumps(files))
"""


def _probe_modules(package_root: Path, site_packages: Path) -> list[Path]:
    env = {
        "PYTHONPATH": f"{package_root}:{site_packages}",
        "PATH": "/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
    }
    result = subprocess.run(
        [str(PYTHON), "-S", "-c", _PROBE, *GUEST_IMPORTS],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or "python import probe failed")
    return [Path(p) for p in json.loads(result.stdout)]


def _site_root(path: Path, site_packages: Path, package_root: Path) -> tuple[str, Path] | None:
    """Top-level package dir holding `path`: ours from the repo, others from site-packages."""
    if site_packages in path.parents:
        top = path.relative_to(site_packages).parts[0]
        return top, site_packages / top
    if package_root / "kata_shim" in path.parents:
        return "kata_shim", package_root / "kata_shim"
    return None


def plan_python(package_root: Path, site_packages: Path) -> PythonPlan:
    """Decide which stdlib files, extensions and packages the guest needs."""
    stdlib: set[Path] = set(STDLIB.glob("encodings/*.py"))
    extensions: set[Path] = set()
    site_roots: dict[str, Path] = {}
    for path in _probe_modules(package_root, site_packages):
        if path.name.startswith(GUEST_LEAVES_OUT):
            continue
        root = _site_root(path, site_packages, package_root)
        if root is not None:
            site_roots[root[0]] = root[1]
        elif STDLIB in path.parents and path.suffix == ".py":
            stdlib.add(path)
        elif STDLIB in path.parents and path.suffix == ".so":
            extensions.add(path)
    cffi_backend = next(site_packages.glob("_cffi_backend*.so"), None)
    if cffi_backend is not None:
        site_roots[cffi_backend.name] = cffi_backend
    return PythonPlan(sorted(stdlib), sorted(extensions), dict(sorted(site_roots.items())))


def shared_libraries(binary: Path) -> list[Path]:
    """Every library `ldd` resolves for `binary` (plus its ELF interpreter)."""
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    libs = []
    for line in result.stdout.splitlines():
        match = re.search(r"(/\S+) \(0x", line)
        if match:
            libs.append(Path(match.group(1)))
    return libs


def install_binary(binary: Path, tree: Path, dest: str) -> None:
    """Copy an executable or .so to tree/dest plus its libraries (resolved copies)."""
    target = tree / dest
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(binary, target)
    target.chmod(0o755)
    for lib in shared_libraries(binary):
        where = lib if lib.parent.name == "lib64" else Path("/usr/lib/x86_64-linux-gnu") / lib.name
        copy = tree / str(where).lstrip("/")
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(lib.resolve(), copy)
            copy.chmod(0o755)


def _compile_stdlib(files: list[Path], tree: Path) -> None:
    for source in files:
        target = tree / str(source).lstrip("/")
        target = target.with_suffix(".pyc")
        target.parent.mkdir(parents=True, exist_ok=True)
        py_compile.compile(
            str(source),
            cfile=str(target),
            dfile=str(source),
            doraise=True,
            optimize=1,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )


def _copy_site(name: str, source: Path, tree: Path) -> None:
    dest = tree / GUEST_LIB / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_file():
        shutil.copyfile(source, dest)
        return
    ignore = shutil.ignore_patterns("__pycache__", "*.pyi", "*.pyx", "*.c", "tests", "py.typed")
    shutil.copytree(source, dest, ignore=ignore, dirs_exist_ok=True)


def _compile_site(root: Path) -> None:
    """__pycache__ next to every copied source (the guest never writes bytecode, so
    without it every agent start would compile kata_shim and protobuf under TCG)."""
    for source in sorted(root.rglob("*.py")):
        py_compile.compile(
            str(source),
            cfile=importlib.util.cache_from_source(str(source)),
            dfile=f"/{GUEST_LIB}/{source.relative_to(root)}",  # the path in the guest
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )


def install_python(plan: PythonPlan, tree: Path) -> None:
    """Materialise the plan under `tree` (the initramfs root)."""
    install_binary(PYTHON, tree, "usr/bin/python3")
    _compile_stdlib(plan.stdlib_files, tree)
    for extension in plan.extensions:
        install_binary(extension, tree, str(extension).lstrip("/"))
    for name, source in plan.site_roots.items():
        _copy_site(name, source, tree)
    _compile_site(tree / GUEST_LIB)
    for so in (tree / GUEST_LIB).rglob("*.so"):
        for lib in shared_libraries(so):
            copy = tree / "usr/lib/x86_64-linux-gnu" / lib.name
            if lib.parent.name != "lib64" and not copy.exists():
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(lib.resolve(), copy)


def input_files(plan: PythonPlan) -> list[Path]:
    """Every host file the Python part of the image is built from (for the fingerprint)."""
    files = [PYTHON, *plan.stdlib_files, *plan.extensions]
    for source in plan.site_roots.values():
        files += (
            sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        )
    return [f for f in files if "__pycache__" not in f.parts]


def python_version() -> str:
    out = subprocess.run(
        [str(PYTHON), "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip() or sys.version.split()[0]


def site_packages_of(python: str = sys.executable) -> Path:
    out = subprocess.run(
        [
            python,
            "-c",
            "import google.protobuf, os; "
            "print(os.path.dirname(os.path.dirname(google.protobuf.__path__[0])))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())
