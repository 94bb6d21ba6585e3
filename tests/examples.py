"""The code blocks the documentation marks as runnable (``<!-- example: NAME -->`` before a
Python block), read from wherever they are: README.md, the client's README (schemas/README.md,
which the docs site includes), the docs site's pages, or a given file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def example(name: str, *places: Path) -> str:
    """The one Python block marked ``<!-- example: NAME -->`` in ``places`` (by default README.md,
    schemas/README.md and docs/**/*.md); fail if there is none, or more than one."""
    pattern = re.compile(rf"<!-- example: {re.escape(name)} -->\n```python\n(.*?)```", re.DOTALL)
    files = places or (ROOT / "README.md", ROOT / "schemas" / "README.md",
                       *sorted((ROOT / "docs").rglob("*.md")))  # fmt: skip
    found = [m.group(1) for f in files for m in pattern.finditer(f.read_text(encoding="utf-8"))]
    assert len(found) == 1, f"{len(found)} examples named {name!r} in {[str(f) for f in files]}"
    return found[0]
