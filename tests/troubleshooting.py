"""docs/troubleshooting.md as test data: one entry per sandbox start failure.

Each entry starts with `<a id="FAULT"></a>`, says `Code: \\`Name\\``, and shows what
`ctr` prints in the first ```text block, with `<placeholders>` for what varies
(paths, pids, seconds, console lines). The integration tests match the real
output against these templates, so the document cannot drift from the code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CTR_PREFIX", "CTR_SUFFIX", "DOC", "Entry", "entries"]

DOC = Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"
CTR_PREFIX = "ctr: failed to create shim task: "
# google.rpc code name → the class containerd (errdefs) appends to the message
CTR_SUFFIX = {
    "FailedPrecondition": "failed precondition",
    "InvalidArgument": "invalid argument",
    "Unavailable": "unavailable",
    "DeadlineExceeded": "context deadline exceeded",
}
_ENTRY = re.compile(r'^<a id="([a-z0-9-]+)"></a>$', re.M)
_CODE = re.compile(r"^Code: `(\w+)`", re.M)
_TEXT = re.compile(r"^```text\n(.*?)\n```$", re.M | re.S)
_PLACEHOLDER = re.compile(r"<[a-z][a-z0-9 _-]*>")


@dataclass(frozen=True)
class Entry:
    fault: str
    code: str
    ctr: str  # the template of what ctr prints

    @property
    def message(self) -> str:
        """The template of the shim's own message (no ctr prefix, no containerd class)."""
        suffix = f": {CTR_SUFFIX[self.code]}"
        assert self.ctr.startswith(CTR_PREFIX) and self.ctr.endswith(suffix), self
        return self.ctr[len(CTR_PREFIX) : -len(suffix)]

    @staticmethod
    def _regex(template: str) -> re.Pattern[str]:
        parts = _PLACEHOLDER.split(template)
        return re.compile(".+?".join(re.escape(part) for part in parts), re.S)

    def matches_ctr(self, text: str) -> bool:
        return self._regex(self.ctr).fullmatch(text.strip()) is not None

    def matches_message(self, text: str) -> bool:
        return self._regex(self.message).fullmatch(text.strip()) is not None


def entries(doc: Path = DOC) -> dict[str, Entry]:
    text = doc.read_text()
    found: dict[str, Entry] = {}
    marks = list(_ENTRY.finditer(text))
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        section = text[mark.end() : following.start() if following else len(text)]
        code, block = _CODE.search(section), _TEXT.search(section)
        assert code and block, f"{doc}: entry {mark[1]} needs a Code: line and a text block"
        found[mark[1]] = Entry(mark[1], code[1], block[1].strip())
    return found
