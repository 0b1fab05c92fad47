"""The task layer talks to the agent only through AgentClient: no agent request is built
in kata_shim/task, and the generated stub is not imported there."""

from __future__ import annotations

import ast
from pathlib import Path

import kata_shim.task

TASK = Path(kata_shim.task.__file__).parent


def _request_constructions(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        func = node.func if isinstance(node, ast.Call) else None
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "agent_pb2"
            and func.attr.endswith("Request")
        ):
            found.append(f"line {node.lineno}: agent_pb2.{func.attr}(...)")
    return found


def test_task_builds_no_agent_request_and_imports_no_stub() -> None:
    offences = []
    for path in sorted(TASK.glob("*.py")):
        source = path.read_text()
        offences += [f"{path.name} {o}" for o in _request_constructions(ast.parse(source))]
        if "agent_ttrpc" in source:
            offences.append(f"{path.name}: imports the generated agent stub")
    assert offences == []
