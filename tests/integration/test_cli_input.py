"""What a person typing ``approvals`` gets for a mistake: one line (or the one error shape under
``--json``), never a traceback, against a real nats-server so that nothing is refused merely
because the bus is unreachable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import click
import pytest
from click.testing import CliRunner

from approvals.services.cli import cli

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from click.testing import Result

    from approvals.services.runtime.natsserver import NatsServer

Invoke: TypeAlias = "Callable[[list[str], bool], Result]"
ILLEGAL_TOKENS = ["a.b", "a b", "a*", "a>", "a$b"]
ID = "0190c7b2-5d3e-7a8b-9c0d-1e2f3a4b5c6d"
DIGEST = "a" * 64
EXAMPLE = str(Path(__file__).parents[2] / "schemas" / "examples" / "workspace.toml")

# Every `approvals` command that takes a workspace: `{}` stands for the illegal token.
WORKSPACE_COMMANDS = [
    ["-w", "{}", "workspace", "show"],
    ["workspace", "show", "{}"],
    ["-w", "{}", "budget", "show"],
    ["budget", "show", "{}"],
    ["-w", "{}", "show", ID],
    ["-w", "{}", "list"],
    ["-w", "{}", "wait", ID, "--timeout", "1"],
    ["-w", "{}", "request", "--title", "t", "--requested-by", "service:x"],
    ["-w", "{}", "check", "--title", "t", "--requested-by", "service:x"],
    ["-w", "{}", "approve", ID, "--approver", "user:ana", "--digest", DIGEST],
    ["-w", "{}", "reject", ID, "--approver", "user:ana"],
    ["-w", "{}", "cancel", ID, "--by", "user:ana"],
    ["-w", "{}", "redeem", ID, "--digest", DIGEST, "--executor", "service:x"],
    [
        "-w",
        "{}",
        "report",
        ID,
        "--credits-used",
        "1",
        "--outcome",
        "succeeded",
        "--by",
        "service:x",
    ],
    ["-w", "{}", "delegate", "--by", "user:ana", "--to", "user:bo", "--days", "1"],
    ["-w", "{}", "reviews", "next", "--as", "user:ana"],
    ["-w", "{}", "reviews", "accept", ID, "--as", "user:ana"],
    ["-w", "{}", "reviews", "reject", ID, "--as", "user:ana"],
    ["-w", "{}", "keys", "create", "--as", "service:x", "--by", "user:root"],
    ["-w", "{}", "keys", "revoke", "abcdef0123456789", "--by", "user:root"],
    ["workspace", "apply", EXAMPLE, "--as", "user:admin", "-w", "{}"],
    ["audit", "replay", "--workspace", "{}"],
    ["audit", "export", "--workspace", "{}"],
    ["audit", "report", "--workspace", "{}"],
    ["-w", "{}", "events"],
    ["events", "--approval", "{}"],  # any token passes here: it filters the stream
]

# Every command that takes an approval id, a digest or a key id: `{}` stands for the bad value.
ID_COMMANDS = [
    ["show", "{}"],
    ["wait", "{}", "--timeout", "1"],
    ["approve", "{}", "--approver", "user:ana", "--digest", DIGEST],
    ["reject", "{}", "--approver", "user:ana"],
    ["cancel", "{}", "--by", "user:ana"],
    ["redeem", "{}", "--digest", DIGEST, "--executor", "service:x"],
    ["report", "{}", "--credits-used", "1", "--outcome", "succeeded", "--by", "service:x"],
    ["reviews", "accept", "{}", "--as", "user:ana"],
    ["reviews", "reject", "{}", "--as", "user:ana"],
    ["audit", "history", "{}"],
    ["audit", "replay", "--approval", "{}"],
]
DIGEST_COMMANDS = [
    ["approve", ID, "--approver", "user:ana", "--digest", "{}"],
    ["redeem", ID, "--digest", "{}", "--executor", "service:x"],
]


@pytest.fixture
def run(nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    monkeypatch.chdir(tmp_path)  # the audit commands would open ./var
    runner = CliRunner()

    def invoke(args: list[str], as_json: bool) -> Result:
        flags = ["--json"] if as_json else []
        return runner.invoke(cli, ["--nats-url", nats_server.url, *flags, *args])

    return invoke


def _assert_refused(result: Result, as_json: bool, *words: str) -> None:
    """Refused with exit != 0, one line on stderr or the one JSON error shape, no traceback."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    if as_json:
        error = json.loads(result.stdout)
        assert set(error) == {"ok", "error"}
        assert error["ok"] is False
        assert error["error"]["code"] == "invalid", error
        message = error["error"]["message"]
    else:
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error [invalid]: "), lines[0]
        message = lines[0]
    for word in words:
        assert word in message, message
    # A person reads what is allowed, not the regex that checks it.
    for regex_part in ("[A-Za-z", "{64}", "^"):
        assert regex_part not in message, message


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("token", ILLEGAL_TOKENS)
@pytest.mark.parametrize("args", WORKSPACE_COMMANDS, ids=lambda a: " ".join(a))
def test_an_illegal_workspace_is_one_clear_error(
    run: Invoke, args: list[str], token: str, as_json: bool
) -> None:
    result = run([a.replace("{}", token) for a in args], as_json)
    _assert_refused(result, as_json, repr(token), "letters")


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("bad", ["not-an-id", "a.b", "a*"])
@pytest.mark.parametrize("args", ID_COMMANDS, ids=lambda a: " ".join(a))
def test_a_malformed_approval_id_is_one_clear_error(
    run: Invoke, args: list[str], bad: str, as_json: bool
) -> None:
    result = run([a.replace("{}", bad) for a in args], as_json)
    _assert_refused(result, as_json, repr(bad), "approval id")


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("bad", ["abc", "A" * 64, "a" * 63])
@pytest.mark.parametrize("args", DIGEST_COMMANDS, ids=lambda a: " ".join(a))
def test_a_malformed_digest_is_one_clear_error(
    run: Invoke, args: list[str], bad: str, as_json: bool
) -> None:
    result = run([a.replace("{}", bad) for a in args], as_json)
    _assert_refused(result, as_json, "64", "hex")


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize(
    "args",
    [
        ["keys", "revoke", "Bad.Key", "--by", "user:root"],
        ["approve", ID, "--approver", "ana", "--digest", DIGEST],
        ["request", "--title", "t", "--requested-by", "root"],
        ["request", "--title", "t", "--requested-by", "service:x", "--payload", "{nope"],
        ["request", "--title", "t", "--requested-by", "service:x", "--kind", "crm"],
        ["show"],
        ["no-such-command"],
    ],
    ids=lambda a: " ".join(a),
)
def test_other_mistakes_are_one_clear_error(run: Invoke, args: list[str], as_json: bool) -> None:
    result = run(args, as_json)
    _assert_refused(result, as_json)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_request_never_names_the_operating_system_user(run: Invoke, as_json: bool) -> None:
    # Check: without --requested-by nothing is sent in the name of whoever runs the shell.
    result = run(["request", "--title", "t", "--kind", "crm_write"], as_json)
    _assert_refused(result, as_json, "--requested-by")


def _commands(group: click.Group, path: str = "approvals") -> Iterator[tuple[str, click.Command]]:
    yield path, group
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path} {name}")
        else:
            yield f"{path} {name}", command


def test_every_option_has_help_and_every_choice_lists_its_values() -> None:
    runner = CliRunner()
    for path, command in _commands(cli):
        assert command.help, f"{path} has no description"
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            assert param.help, f"{path} {param.opts[0]} has no help text"
            if param.name in ("kind", "touches", "risk_level", "mode", "status", "outcome"):
                assert isinstance(param.type, click.Choice), f"{path} {param.opts[0]}"
            if isinstance(param.type, click.Choice) and param.name != "help":
                shown = runner.invoke(cli, [*path.split()[1:], "--help"], terminal_width=200)
                assert shown.exit_code == 0, shown.output
                for value in param.type.choices:
                    assert str(value) in shown.output, f"{path} {param.opts[0]}: {value}"
            if "requested" in (param.name or "") or param.name in ("approver", "by", "member"):
                # Never the operating-system user (click marks "no default" with a sentinel).
                assert not isinstance(param.default, str), f"{path} {param.opts[0]} defaults"


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["approve", ID, "--all-matching", "--approver", "user:ana", "--yes"], ["not both"]),
        (["reject", "--risk", "low", "--approver", "user:ana", "--yes"], ["--all-matching"]),
        (["approve", ID, ID, "--approver", "user:ana", "--digest", DIGEST], ["one approval id"]),
        (["approve", "--approver", "user:ana", "--yes"], ["--all-matching"]),
    ],
    ids=["ids-and-all-matching", "filters-alone", "digest-for-several", "nothing-named"],
)
def test_a_decision_of_several_that_says_two_things_is_one_clear_error(
    run: Invoke, args: list[str], words: list[str], as_json: bool
) -> None:
    # Check: ids and --all-matching, filters without it, one --digest for several: nothing sent.
    _assert_refused(run(args, as_json), as_json, *words)


def test_a_decision_of_several_under_json_needs_yes(run: Invoke) -> None:
    # Check: --json cannot ask for confirmation, so nothing is decided without --yes.
    result = run(["approve", "--all-matching", "--approver", "user:ana"], True)
    _assert_refused(result, True, "--yes")
