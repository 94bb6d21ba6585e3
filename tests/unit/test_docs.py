"""The documentation says what the tree and the command line are: README.md is a short front door,
docs/layout.md names every package, the OpenAPI copy is the gateway's, and every ``approvals``
and ``make`` command in README.md and the docs exists with the options it is shown with.

The code blocks the docs show are run elsewhere, from the page they are on: the workspace file
(tests/unit/test_workspace_file.py), the client example (tests/e2e/test_client.py), the MCP
configuration (tests/e2e/test_mcp.py). ``mkdocs build --strict`` (``make lint``) fails on a
broken link. ``.venv/bin/python -m tests.unit.test_docs`` rewrites docs/openapi.json.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
LAYOUT = DOCS / "layout.md"
OPENAPI = DOCS / "openapi.json"
# What the site renders: its own pages and the two READMEs it includes.
PAGES = [
    README,
    *sorted(DOCS.glob("*.md")),
    ROOT / "deploy/README.md",
    ROOT / "benchmarks/README.md",
]
MAX_README_LINES = 250


def test_the_readme_is_a_front_door_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES
    blocks = "\n".join(code_lines(text))
    assert re.search(r"^make run\b", blocks, re.M), "README.md must show `make run`"
    assert re.search(r"^make test\b", blocks, re.M), "README.md must show `make test`"
    assert "make test" in (ROOT / ".ci/run").read_text(), "CI runs the README's test command"


# -- the layout page against the tree ------------------------------------------------------------


def layout_rows() -> dict[str, str]:
    """``path -> purpose`` of every table row on docs/layout.md whose first cell is a path."""
    rows = re.findall(r"^\| `([^`]+)` \| (.*?) \|$", LAYOUT.read_text(encoding="utf-8"), re.M)
    return dict(rows)


def package_folders() -> list[str]:
    """Every package folder of the three installed trees, and every module directly in
    services/ (where the loose modules that are not services tend to gather)."""
    found = {
        f"{init.parent.relative_to(ROOT).as_posix()}/"
        for top in ("services", "schemas", "projections")
        for init in (ROOT / top).rglob("__init__.py")
        if "build" not in init.relative_to(ROOT).parts
    }  # fmt: skip  (a wheel build's copy)
    found |= {f"services/{module.name}" for module in (ROOT / "services").glob("*.py")
              if module.name != "__init__.py"}  # fmt: skip
    return sorted(found)


@pytest.mark.parametrize("path", package_folders())
def test_the_layout_page_names_every_package_with_its_purpose(path: str) -> None:
    rows = layout_rows()
    assert path in rows, f"docs/layout.md has no row for {path}"
    assert len(rows[path].split()) >= 3, f"docs/layout.md: say what {path} is for"


def test_every_path_on_the_layout_page_exists() -> None:
    rows = layout_rows()
    assert len(rows) >= 10
    assert [path for path in rows if not (ROOT / path).exists()] == []


# -- the OpenAPI document ------------------------------------------------------------------------


def openapi_document() -> dict[str, object]:
    """The document the gateway serves at /openapi.json, made the way the endpoint makes it."""
    from litestar.serialization import encode_json

    from approvals.services.gateway.app import create_app
    from approvals.services.runtime.settings import Settings

    app = create_app(Settings(gateway_secret="docs"))
    document: dict[str, object] = json.loads(encode_json(app.openapi_schema.to_schema()))
    return document


def render_openapi(document: dict[str, object]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def test_the_documented_openapi_is_the_gateways() -> None:
    assert OPENAPI.read_text(encoding="utf-8") == render_openapi(openapi_document()), (
        "docs/openapi.json is stale: run .venv/bin/python -m tests.unit.test_docs"
    )


# -- every command shown exists, with its options ------------------------------------------------


def code_lines(text: str) -> list[str]:
    """The command lines of a page: its indented and fenced blocks (continuations joined), and
    inline code that starts with ``approvals``."""
    lines: list[str] = []
    fenced = False
    for line in text.replace("\\\n", " ").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            lines.append(line.strip())
    lines += re.findall(r"`(approvals [^`]+)`", text.replace("\n", " "))
    return lines


def shown_commands() -> list[tuple[str, str]]:
    """``(page, command)`` for every ``approvals ...`` invocation shown in README.md and docs/."""
    found = []
    for page in PAGES:
        for line in code_lines(page.read_text(encoding="utf-8")):
            command = line.split("  #")[0]
            # A pipe between two invocations; a `|` inside [...] is a synopsis's alternative.
            for part in re.split(r"\|(?=\s*\S*approvals\s)", command):
                words = part.split()
                if words and words[0].split("/")[-1] == "approvals":
                    found.append((page.relative_to(ROOT).as_posix(), part.strip().rstrip("&")))
    # The command line page's table names each command without the program's name.
    for cell in re.findall(r"^\| (`.+?`) \|", (DOCS / "cli.md").read_text(encoding="utf-8"), re.M):
        found += [("docs/cli.md", f"approvals {span}") for span in re.findall(r"`([^`]+)`", cell)]
    return found


def resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    """The click command ``words`` name, and the option names used with it and its groups."""
    from approvals.services.cli import cli

    command: click.Command = cli
    options: list[str] = []
    for word in words:
        if re.match(r"-{1,2}[A-Za-z]", word):
            options.append(word.split("=")[0])
        elif isinstance(command, click.Group) and word in command.commands:
            command = command.commands[word]
    return command, options


def option_names(command: click.Command) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)}


@pytest.mark.parametrize(("page", "command"), shown_commands())
def test_a_shown_command_exists_with_its_options(page: str, command: str) -> None:
    from approvals.services.cli import cli

    words = shlex.split(re.sub(r"[\[\]()|]", " ", command))[1:]
    target, options = resolve(words)
    assert target is not cli or "COMMAND" in words, f"{page}: `{command}` names no command"
    known = option_names(cli) | option_names(target) | {"--help"}
    assert [option for option in options if option not in known] == [], f"{page}: `{command}`"


def test_every_make_target_shown_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    shown = {match for page in PAGES for line in code_lines(page.read_text(encoding="utf-8"))
             for match in re.findall(r"^make ([a-z][\w-]*)", line)}  # fmt: skip
    assert {"run", "test"} <= shown
    assert shown <= targets


if __name__ == "__main__":
    OPENAPI.write_text(render_openapi(openapi_document()), encoding="utf-8")
    print(f"wrote {OPENAPI.relative_to(ROOT)}")
