"""The house rules that a reader can check mechanically, checked on every run.

Sizes (modules ≤ 400 lines, functions ≤ 40), a header docstring per module, and
the narrow interfaces: `task/` builds no agent request itself (the agent client
does), nothing flattens the typed configuration back into a dict, the shim
never imports the developer environment, and host-side code never imports the
guest agent. Generated protobuf/ttrpc modules are exempt from the size rules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kata_shim"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 40
# what the running shim and agent are made of; devenv/demo/cli are tools around them
RUNTIME_PACKAGES = (
    "agent",
    "events",
    "guest",
    "io",
    "metrics",
    "process",
    "sandbox",
    "shim",
    "task",
    "ttrpc",
)
HOST_PACKAGES = ("agent", "events", "io", "metrics", "process", "sandbox", "shim", "task")
# the local sandbox's agent is forked from a pre-warmed zygote that imports it on purpose
AGENT_RUNNERS = {"kata_shim/shim/zygote.py"}


def _generated(path: Path) -> bool:
    return path.name.endswith(("_pb2.py", "_ttrpc.py"))


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if not _generated(p))


def _rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _in(path: Path, packages: tuple[str, ...]) -> bool:
    parts = path.relative_to(PACKAGE).parts
    return len(parts) > 1 and parts[0] in packages


def test_modules_are_small() -> None:
    too_big = [
        f"{_rel(p)}: {n} lines"
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not too_big, "split these modules (≤ 400 lines):\n" + "\n".join(too_big)


def test_functions_are_small() -> None:
    too_long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{_rel(path)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "split these functions (≤ 40 lines):\n" + "\n".join(too_long)


def test_every_module_says_what_it_owns() -> None:
    bare = [
        _rel(p)
        for p in _modules()
        if p.name != "__init__.py" and not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert not bare, "add a header docstring to:\n" + "\n".join(bare)


def test_task_builds_no_agent_request() -> None:
    pattern = re.compile(r"\bagent_pb2\.\w+\(")
    found = [
        f"{_rel(p)}:{i}: {line.strip()}"
        for p in sorted((PACKAGE / "task").rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, "task/ must call the AgentClient instead:\n" + "\n".join(found)


def test_config_stays_typed() -> None:
    flattened = [_rel(p) for p in _modules() if "as_mapping(" in p.read_text()]
    assert not flattened, "pass the typed config section instead:\n" + "\n".join(flattened)


@pytest.mark.parametrize(
    ("packages", "forbidden", "why"),
    [
        (RUNTIME_PACKAGES, "kata_shim.devenv", "devenv is for tests and the demo only"),
        (HOST_PACKAGES, "kata_shim.guest", "the host talks to the agent over ttrpc only"),
    ],
)
def test_dependency_direction(packages: tuple[str, ...], forbidden: str, why: str) -> None:
    wrong = [
        f"{_rel(p)} imports {name}"
        for p in _modules()
        if _in(p, packages) and _rel(p) not in AGENT_RUNNERS
        for name in sorted(_imports(ast.parse(p.read_text())))
        if name == forbidden or name.startswith(forbidden + ".")
    ]
    assert not wrong, f"{why}:\n" + "\n".join(wrong)
