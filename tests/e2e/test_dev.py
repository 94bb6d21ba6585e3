"""The whole system as a developer meets it: ``approvals dev``, then the CLI, all as processes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.devserver import APPROVALS, EXAMPLE, Dev, free_port

TITLE = "Sync 40 contacts to HubSpot"

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Callable[[], Dev]]:
    """Start ``approvals dev`` on one data directory and port, ready to take commands."""
    port, web = free_port(), {"APPROVALS_GATEWAY_PORT": str(free_port())}
    started: list[Dev] = []

    def start() -> Dev:
        process = Dev(tmp_path / "data", port, tmp_path / f"dev-{len(started)}.log", env=web)
        started.append(process)
        process.wait_for_line("ready")
        return process

    yield start
    for process in started:
        process.kill()


def cli(url: str, *args: str, as_json: bool = True) -> subprocess.CompletedProcess[str]:
    flags = ["--json"] if as_json else []
    return subprocess.run(
        [APPROVALS, "--nats-url", url, "-w", "acme", *flags, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli_json(url: str, *args: str) -> Any:
    """Run a command that must succeed; its JSON output."""
    done = cli(url, *args)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return json.loads(done.stdout)


def request(url: str, title: str, kind: str, requested_by: str) -> Any:
    return cli_json(
        url, "request", "--title", title, "--kind", kind, "--requested-by", requested_by
    )


def events(url: str) -> list[dict[str, Any]]:
    """The approvals' events on the stream (the workspace's settings left out)."""
    done = cli(url, "events")
    assert done.returncode == 0, (done.stdout, done.stderr)
    found = [json.loads(line) for line in done.stdout.splitlines()]
    return [e for e in found if "approval_id" in e["event"]]


def events_when(url: str, count: int, within_s: float = 30.0) -> list[dict[str, Any]]:
    """The workspace's events once the stream holds ``count`` of them (the relay is async)."""
    deadline = time.monotonic() + within_s
    while len(found := events(url)) < count:
        assert time.monotonic() < deadline, f"{len(found)} events, not {count}: {found}"
        time.sleep(0.1)  # between retries of a whole CLI run
    return found


def story(found: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    return [(e["event"]["approval_id"], e["event"]["version"], e["event"]["type"]) for e in found]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_approvals_dev_from_the_command_line(dev: Callable[[], Dev]) -> None:
    first = dev()
    url = first.url
    # Check: dev set up its default workspace from the example file.
    default = cli_json(url, "workspace", "show", "default")
    assert default["workspace"]["settings"]["quorum"] == {"high": 2, "critical": 2}
    spend = cli_json(url, "budget", "show", "default")["budget"]
    assert (spend["cap"], spend["committed"], spend["remaining"]) == (10000, 0, 10000)
    readable_budget = cli(url, "budget", "show", "default", as_json=False)
    assert "remaining" in readable_budget.stdout
    # Check: a workspace that does not exist refuses requests.
    missing = cli(
        url, "request", "--title", "x", "--kind", "crm_write", "--requested-by", "service:agent"
    )
    assert json.loads(missing.stdout)["error"]["details"]["kind"] == "workspace"
    # Check: applying the example file records every setting as a change, by the admin.
    applied = cli_json(url, "workspace", "apply", EXAMPLE, "--as", "user:admin")
    assert (applied["outcome"], applied["settings_version"]) == ("configured", 1)
    assert {"path": "quorum.high", "before": None, "after": 2} in applied["changes"]
    again = cli(url, "workspace", "apply", EXAMPLE, "--as", "user:admin", as_json=False)
    assert again.returncode == 0, again.stderr
    assert "no change" in again.stdout
    shown_ws = cli(url, "workspace", "show", as_json=False)
    assert "high=2" in shown_ws.stdout
    assert "user:ana" in shown_ws.stdout
    # Check: a CRM write by a service needs approval.
    requested = request(url, TITLE, "crm_write", "service:agent")
    assert (requested["ok"], requested["outcome"]) == (True, "approval_required")
    approval = requested["approval"]
    approval_id, digest = approval["id"], approval["digest"]
    assert (approval["status"], approval["version"]) == ("pending", 1)
    # Check: the spend-cap service records the budget picture, then delivery puts it in the inbox,
    # before anyone decides.
    checked = events_when(url, 3)
    assert story(checked) == [(approval_id, 1, "requested"), (approval_id, 2, "spend_checked"),
                              (approval_id, 3, "delivered")]  # fmt: skip
    assert checked[2]["event"]["channel"] == "inbox"
    picture = checked[1]["event"]["spend"]
    assert (picture["cap"], picture["remaining"], picture["ceiling"]) == (10000, 10000, None)

    # Check: a read needs none, and the readable output says so.
    read = cli(
        url, "request", "--title", "Look up", "--kind", "read", "--requested-by", "service:agent",
        as_json=False,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr
    assert "not_required" in read.stdout

    # Check: ana approves it with the digest she was shown.
    approved = cli_json(url, "approve", approval_id, "--approver", "user:ana", "--digest", digest)
    assert (approved["outcome"], approved["approval"]["version"]) == ("approved", 4)

    # Check: the status projection shows it approved, with its two events.
    waited = cli(url, "wait", approval_id, "--timeout", "30")
    assert waited.returncode == 0, (waited.stdout, waited.stderr)
    shown = cli_json(url, "show", approval_id)
    assert shown["approval"]["status"] == "approved"
    assert [(e["version"], e["type"]) for e in shown["timeline"]] == [
        (1, "requested"),
        (2, "spend_checked"),
        (3, "delivered"),
        (4, "approved"),
    ]
    readable = cli(url, "show", approval_id, as_json=False)
    assert readable.returncode == 0, readable.stderr
    assert TITLE in readable.stdout
    assert "approved" in readable.stdout

    # Check: a requester may not approve its own request; --json prints the error.
    own = request(url, "My own request", "crm_write", "user:dave")["approval"]
    refused = cli(url, "approve", own["id"], "--approver", "user:dave", "--digest", own["digest"])
    assert refused.returncode == 1
    error = json.loads(refused.stdout)["error"]
    assert (error["code"], error["details"]["rule"]) == ("forbidden", "separation:requester")

    # Check: the stream holds the seven events, in order, and nothing of the read or the refusal.
    before = events_when(url, 7)
    assert story(before) == [
        (approval_id, 1, "requested"),
        (approval_id, 2, "spend_checked"),
        (approval_id, 3, "delivered"),
        (approval_id, 4, "approved"),
        (own["id"], 1, "requested"),
        (own["id"], 2, "spend_checked"),
        (own["id"], 3, "delivered"),
    ]

    # Check: Ctrl-C stops everything, cleanly.
    assert first.interrupt() == 0, first.diagnostics()
    first.wait_for_line("stopped", within_s=5)

    # Check: started again on the same data, it remembers, and the stream goes on.
    second = dev()
    again = cli_json(url, "show", approval_id)
    assert again["approval"]["status"] == "approved"
    new = request(url, "After the restart", "crm_write", "service:agent")["approval"]
    assert new["version"] == 1
    after = events_when(url, len(before) + 3)
    assert len(after) == len(before) + 3
    assert after[:-3] == before
    assert after[-3]["seq"] == before[-1]["seq"] + 1
    assert story(after[-3:]) == [(new["id"], 1, "requested"), (new["id"], 2, "spend_checked"),
                                 (new["id"], 3, "delivered")]  # fmt: skip
    assert second.interrupt() == 0, second.diagnostics()
