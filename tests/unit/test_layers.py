"""Each import runs one way: the rules of the layering, read from the source (no import runs).

A component lives with the process that runs it; what two services share sits in the shared
runtime (``services/runtime``) or the wire contract (``schemas``), never in one of the two.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
TOPS = ("services", "schemas", "projections")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("approvals", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (at any depth: type-only and lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules_under(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


# (importers, what they must not import, why)
NEVER = [
    ("services/approvals", "approvals.services.audit",
     "the auditors read the command service's log; the command service never needs them"),
    ("services/delivery", "approvals.services.gateway",
     "the delivery adapters issue confirm links the gateway checks: a shared module holds them"),
    ("services", "approvals.services.scheduler",
     "the schedulers run in the projection service and live with it"),
]  # fmt: skip


@pytest.mark.parametrize(("importers", "forbidden", "why"), NEVER)
def test_no_import_runs_against_the_layering(importers: str, forbidden: str, why: str) -> None:
    wrong = {
        module_name(path): sorted(n for n in imports_of(path) if within(n, forbidden))
        for path in modules_under(importers)
    }
    assert not {name: found for name, found in wrong.items() if found}, why


# A service's assembly module and the packages it may take its parts from: its own, the shared
# runtime and the wire contract. A part it runs from elsewhere belongs in its own package.
ASSEMBLIES = {
    "services/approvals/service.py": "approvals.services.approvals",
    "services/delivery/service.py": "approvals.services.delivery",
    "services/spendcap/service.py": "approvals.services.spendcap",
    "services/gateway/app.py": "approvals.services.gateway",
    "projections/status/service.py": "approvals.projections.status",
}
SHARED = ("approvals.services.runtime", "approvals.schemas")


@pytest.mark.parametrize(("assembly", "own"), ASSEMBLIES.items())
def test_a_service_runs_parts_of_its_own_package(assembly: str, own: str) -> None:
    ours = {n for n in imports_of(ROOT / assembly) if within(n, "approvals")}
    foreign = sorted(n for n in ours if not any(within(n, p) for p in (own, *SHARED)))
    assert not foreign, f"{assembly} runs parts from elsewhere: move them into {own}"


def test_the_scheduler_package_is_gone_from_services() -> None:
    # (a checkout may keep the old folder's __pycache__: no source is what counts)
    assert not list((ROOT / "services" / "scheduler").glob("*.py"))


# -- replies: one typed envelope, decoded in schemas ---------------------------------------------

# The MCP tools (services/agent/server.py) read plain dicts from two doors, one of them HTTP,
# where a reply may be no envelope at all.
NOT_YET = {"services/agent/server.py"}


def is_get_ok(call: ast.Call) -> bool:
    first = call.args[0] if call.args else None
    return (isinstance(call.func, ast.Attribute) and call.func.attr == "get"
            and isinstance(first, ast.Constant) and first.value == "ok")  # fmt: skip


def is_struct(cls: ast.ClassDef) -> bool:
    return any(ast.unparse(base).endswith("Struct") for base in cls.bases)


def untyped_reply_reads(path: Path) -> list[str]:
    """``x.get("ok")`` on a decoded reply, and private Structs that peek at ``ok``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and is_get_ok(node):
            found.append(f"line {node.lineno}: .get('ok')")
        if isinstance(node, ast.ClassDef) and is_struct(node) and any(
            isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            and item.target.id == "ok" for item in node.body
        ):  # fmt: skip
            found.append(f"line {node.lineno}: class {node.name} peeks at ok")
    return found


def test_replies_are_read_through_the_one_envelope() -> None:
    """Whether a reply succeeded, and its error, are read with ``schemas.codec.reply_error``
    (the ``Envelope`` of ``schemas.replies``), not with a private Struct or an untyped dict."""
    wrong = {
        str(path.relative_to(ROOT)): reads
        for top in ("services", "projections")
        for path in modules_under(top)
        if str(path.relative_to(ROOT)) not in NOT_YET and (reads := untyped_reply_reads(path))
    }
    assert not wrong


# -- the audit CLI, split by job ---------------------------------------------------------------


def test_the_audit_cli_is_split_by_job() -> None:
    """Commands, the replay-vs-view comparison and the rendering each have a module of their
    own, none much over the house's ~200 lines; rendering is pure text (no click, no bus)."""
    package = ROOT / "services" / "cli" / "audit"
    modules = {path.stem: path for path in package.glob("*.py")}
    assert {"comparison", "rendering"} <= set(modules)
    assert {name: n for name, path in modules.items()
            if (n := len(path.read_text().splitlines())) > 250} == {}  # fmt: skip
    assert not {n for n in imports_of(modules["rendering"]) if n.split(".")[0] in ("click", "nats")}
