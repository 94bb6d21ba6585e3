"""The workspace file: the example the docs show is the shipped one, and bad files are refused with
the key that is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from approvals.schemas.workspace import WorkspaceFileError, diff, parse_workspace

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "schemas" / "examples" / "workspace.toml"


def test_the_docs_show_the_example_file_exactly() -> None:
    page = (ROOT / "docs" / "workspace-file.md").read_text()
    [shown] = re.findall(r"<!-- example: workspace -->\n```toml\n(.*?)```", page, re.S)
    assert shown == EXAMPLE.read_text()
    settings = parse_workspace(shown)
    assert settings.quorum_for("high") == 2
    assert settings.quorum_for("low") == 1


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ('colour = "blue"\n', "colour"),
        ('[groups]\nleads = ["user:nobody"]\n', "user:nobody is not a member"),
        ('[approvers]\nlow = ["ghosts"]\n', "no group ghosts"),
        ('[channels]\nlow = ["pager"]\n', "pager has no [channel.pager] table"),
        ('[members."user:x"]\nroles = ["boss"]\n', "roles"),
        ('[channel.pager]\nsecret = "xoxb-1-abc"\n', "secret"),
        ("[quorum]\nhigh = 0\n", "quorum"),
    ],
)
def test_a_wrong_key_is_refused_by_name(change: str, names: str) -> None:
    base = '[members."user:admin"]\nroles = ["admin"]\n'
    with pytest.raises(WorkspaceFileError, match=re.escape(names)):
        parse_workspace(change + base if not change.startswith("[") else base + change)


def test_a_workspace_without_an_admin_is_refused() -> None:
    with pytest.raises(WorkspaceFileError, match="no admin"):
        parse_workspace('[members."user:ana"]\nroles = ["approver"]\n')


def test_the_diff_names_each_changed_leaf() -> None:
    before = parse_workspace(EXAMPLE.read_text())
    after = parse_workspace(EXAMPLE.read_text().replace("high = 2", "high = 3"))
    assert [(c.path, c.before, c.after) for c in diff(before, after)] == [("quorum.high", 2, 3)]
    assert diff(before, before) == []


def test_the_channels_pages_example_is_a_valid_workspace_setting() -> None:
    import tomllib

    from approvals.schemas.workspace import settings_from_builtins

    page = (ROOT / "docs" / "channels.md").read_text()
    [snippet] = re.findall(r"Channels are named in the workspace file.*?```toml\n(.*?)```", page,
                           re.S)  # fmt: skip
    raw = tomllib.loads(EXAMPLE.read_text())
    raw.update(tomllib.loads(snippet))
    settings = settings_from_builtins(raw)
    assert settings.channel["ops-hook"].kind == "webhook"
    assert settings.channels["medium"] == ("inbox", "ops-hook", "email")
