"""Building the two wheels as pip builds them for a user: isolated, from a clean copy of the tree
(a ``build/`` left in the checkout by an earlier build would otherwise be packed again, with
whatever it held then)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", ".typing", "build", "dist", "site", "var", "*.egg-info", "__pycache__",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
)  # fmt: skip


def build_wheels(tmp: Path) -> tuple[Path, Path]:
    """The server's wheel and the client's (``approvals-client``), built into ``tmp / "dist"``."""
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    for project in (source / "schemas", source):
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp / "dist"),
             str(project)], capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    [server] = (tmp / "dist").glob("approvals-*.whl")
    [client] = (tmp / "dist").glob("approvals_client-*.whl")
    return server, client
