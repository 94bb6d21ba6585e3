"""One import root: everything the distributions install lives under ``approvals``, so a user's
own ``services`` (or ``schemas``, ``projections``) package is never shadowed nor mixed with ours.
Two distributions: approvals-client (``schemas/``: the wire contract and the client) and the
server (``services/``, ``projections/``), which depends on the client's and holds no copy of it.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path
from typing import Any

import pytest

from tests.wheels import build_wheels

ROOT = Path(__file__).parents[2]
TOPS = ("services", "schemas", "projections")
SERVER_TOPS = ("services", "projections")
CLIENT = ROOT / "schemas"


def setuptools_of(project: Path) -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads((project / "pyproject.toml").read_text())
    return config


def packages_on_disk(folder: Path, name: str) -> set[str]:
    """The package folders under ``folder`` (not a build's copies of them)."""
    inits = (i.parent.relative_to(folder).parts for i in folder.rglob("__init__.py"))
    return {".".join((name, *parts)) for parts in inits if "build" not in parts}


def test_every_folder_of_the_three_is_installed_under_approvals() -> None:
    """Each pyproject lists its packages by hand (setuptools cannot find them through
    package-dir): the lists must name every package folder, so none is left out of a wheel."""
    config = setuptools_of(ROOT)["tool"]["setuptools"]
    assert config["package-dir"] == {f"approvals.{top}": top for top in SERVER_TOPS}
    on_disk = set().union(
        *(packages_on_disk(ROOT / top, f"approvals.{top}") for top in SERVER_TOPS)
    )
    assert set(config["packages"]) == on_disk
    # Check: the client's folder is approvals.schemas, its client/ folder approvals.client.
    client = setuptools_of(CLIENT)["tool"]["setuptools"]
    assert client["package-dir"] == {"approvals.schemas": ".", "approvals.client": "client"}
    client_on_disk = packages_on_disk(CLIENT / "client", "approvals.client") | {
        p for p in packages_on_disk(CLIENT, "approvals.schemas") if ".client" not in p
    }
    assert set(client["packages"]) == client_on_disk


def test_the_server_depends_on_the_client_and_the_client_on_no_server_part() -> None:
    server = setuptools_of(ROOT)["project"]
    client = setuptools_of(CLIENT)["project"]
    assert f"{client['name']}=={client['version']}" in server["dependencies"]
    names = {re.split(r"[\[<>=~! ]", d, maxsplit=1)[0] for d in client["dependencies"]}
    assert names == {"nats-py", "msgspec", "cryptography", "httpx"}
    # Check: the client's code imports nothing of the server's.
    for module in CLIENT.rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            server = [n for n in names if n.startswith(("approvals.services", "approvals.proj"))]
            assert not server, (module, server)


def test_temporalio_is_an_extra_and_the_server_starts_without_it() -> None:
    server = setuptools_of(ROOT)["project"]
    client = setuptools_of(CLIENT)["project"]
    # Check: the client's temporal extra pins it; neither distribution depends on it.
    assert client["optional-dependencies"]["temporal"] == ["temporalio==1.35.0"]
    for project in (server, client):
        assert not [d for d in project["dependencies"] if d.startswith("temporalio")]
    # Check: the command line (every command but temporal-resumer's body) never imports it.
    probe = "import sys, approvals.services.cli; print('temporalio' in sys.modules)"
    assert run(sys.executable, "-c", probe).strip() == "False"


def run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_the_wheel_installs_beside_a_users_own_services_package(tmp_path: Path) -> None:
    # Check: both wheels build (as pip builds them for a user).
    wheel, client_wheel = build_wheels(tmp_path)
    # A fresh virtualenv with only the wheel; its dependencies are read from ours (a path
    # entry: our editable install's own hook is not loaded there).
    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    ours = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "dependencies.pth").write_text("\n".join(ours) + "\n")
    run(python, "-m", "pip", "install", "--quiet", "--no-deps", wheel, client_wheel)
    # Check: the server's wheel needs the client's, and holds no copy of it.
    shown = run(python, "-m", "pip", "show", "--files", "approvals")
    requires = shown.split("Requires:", 1)[1].splitlines()[0]
    assert "approvals-client" in requires.replace(" ", "").split(","), requires
    files = [line.strip() for line in shown.split("Files:", 1)[1].splitlines() if line.strip()]
    assert any(f.startswith("approvals/services/cli/") for f in files)
    assert not [f for f in files if f.startswith(("approvals/schemas/", "approvals/client/"))]
    # Check: no top-level name of ours is installed, by either wheel.
    client_shown = run(python, "-m", "pip", "show", "--files", "approvals-client")
    client_files = [line.strip() for line in client_shown.split("Files:", 1)[1].splitlines()]
    assert any(f.startswith("approvals/client/") for f in client_files)
    assert any(f.startswith("approvals/schemas/json/") for f in client_files)
    for f in files + client_files:
        assert f.split("/", 1)[0] not in TOPS, f
    # Check: a user's project with its own services package imports both.
    project = tmp_path / "project"
    (project / "services").mkdir(parents=True)
    (project / "services" / "__init__.py").write_text("")
    (project / "services" / "client.py").write_text("MINE = 'the user own services'\n")
    said = run(python, "-c", (
        "from services.client import MINE\n"
        "from approvals.client import ApprovalsClient\n"
        "from approvals.schemas.events import Approved\n"
        "import approvals.services.cli, approvals.projections.status.view\n"
        "print(MINE, ApprovalsClient.__module__, Approved.__module__)"
    ), cwd=project)  # fmt: skip
    assert said.split() == ["the", "user", "own", "services", "approvals.client.bus",
                            "approvals.schemas.events"]  # fmt: skip
    # Check: the console script runs from the wheel.
    assert "Usage: approvals" in run(fresh / "bin" / "approvals", "--help", cwd=project)


def test_the_old_import_path_of_the_client_warns_and_gives_the_same_client() -> None:
    """Callers import ``approvals.services.client`` today: for one release it still works."""
    import approvals.client

    sys.modules.pop("approvals.services.client", None)
    with pytest.warns(DeprecationWarning, match="import approvals.client instead"):
        old = importlib.import_module("approvals.services.client")
    assert old.ApprovalsClient is approvals.client.ApprovalsClient
    assert old.require_approval is approvals.client.require_approval
