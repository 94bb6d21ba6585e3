"""One import root: everything the distribution installs lives under ``approvals``, so a user's
own ``services`` (or ``schemas``, ``projections``) package is never shadowed nor mixed with ours.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
TOPS = ("services", "schemas", "projections")


def test_every_folder_of_the_three_is_installed_under_approvals() -> None:
    """pyproject lists its packages by hand (setuptools cannot find them through package-dir):
    the list must name every package folder, so none is left out of the wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {f"approvals.{top}": top for top in TOPS}
    on_disk = {
        "approvals." + str(init.parent.relative_to(ROOT)).replace("/", ".")
        for top in TOPS
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert set(config["packages"]) == on_disk


def run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_the_wheel_installs_beside_a_users_own_services_package(tmp_path: Path) -> None:
    # Check: the wheel builds (as pip builds it for a user: isolated, from the tree).
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp_path / "dist",
        ROOT)  # fmt: skip
    [wheel] = (tmp_path / "dist").glob("approvals-*.whl")
    # A fresh virtualenv with only the wheel; its dependencies are read from ours (a path
    # entry: our editable install's own hook is not loaded there).
    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    ours = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "dependencies.pth").write_text("\n".join(ours) + "\n")
    run(python, "-m", "pip", "install", "--quiet", "--no-deps", wheel)
    # Check: no top-level name of ours is installed.
    listed = run(python, "-m", "pip", "show", "--files", "approvals")
    files = [line.strip() for line in listed.split("Files:", 1)[1].splitlines() if line.strip()]
    assert any(f.startswith("approvals/services/cli/") for f in files)
    assert not [f for f in files if f.split("/", 1)[0] in TOPS], files
    # Check: a user's project with its own services package imports both.
    project = tmp_path / "project"
    (project / "services").mkdir(parents=True)
    (project / "services" / "__init__.py").write_text("")
    (project / "services" / "client.py").write_text("MINE = 'the user own services'\n")
    said = run(python, "-c", (
        "from services.client import MINE\n"
        "from approvals.services.client import ApprovalsClient\n"
        "from approvals.schemas.events import Approved\n"
        "import approvals.services.cli, approvals.projections.status.view\n"
        "print(MINE, ApprovalsClient.__module__, Approved.__module__)"
    ), cwd=project)  # fmt: skip
    assert said.split() == ["the", "user", "own", "services", "approvals.services.client",
                            "approvals.schemas.events"]  # fmt: skip
    # Check: the console script runs from the wheel.
    assert "Usage: approvals" in run(fresh / "bin" / "approvals", "--help", cwd=project)
