"""Render kata_shim.process.states.TRANSITIONS as a mermaid state diagram.

    python docs/make_state_diagram.py            # print the diagram
    python docs/make_state_diagram.py --write    # refresh it in docs/state-machine.md
    python docs/make_state_diagram.py --check    # exit 1 if docs/state-machine.md is stale

Only state-changing transitions become arrows; ops that keep the state (kill,
exec, update, ...) are listed per state in a table, so the doc cannot drift
from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kata_shim.process.states import TRANSITIONS, Op, ProcessState

DOC = Path(__file__).with_name("state-machine.md")
BEGIN = "<!-- BEGIN GENERATED (docs/make_state_diagram.py) -->"
END = "<!-- END GENERATED -->"


def mermaid() -> str:
    lines = ["```mermaid", "stateDiagram-v2", "    [*] --> created"]
    for (state, op), target in TRANSITIONS.items():
        if target is not state:
            lines.append(f"    {state.value} --> {target.value}: {op.name.lower()}")
    lines += ["    deleted --> [*]", "```"]
    return "\n".join(lines)


def same_state_table() -> str:
    rows = ["| state | allowed without a state change |", "|---|---|"]
    for state in ProcessState:
        ops = [op.name.lower() for op in Op if TRANSITIONS.get((state, op)) is state]
        rows.append(f"| {state.value} | {', '.join(ops) or '—'} |")
    return "\n".join(rows)


def generated() -> str:
    return f"{BEGIN}\n{mermaid()}\n\n{same_state_table()}\n{END}"


def refreshed(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{generated()}{tail}"


def main(argv: list[str]) -> int:
    if "--write" in argv or "--check" in argv:
        current = DOC.read_text()
        wanted = refreshed(current)
        if "--check" in argv:
            return 0 if current == wanted else 1
        DOC.write_text(wanted)
        return 0
    print(generated())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
