"""The LangGraph integration against the real command service and projection on a real
nats-server and SQLite, with LangGraph's SQLite checkpointer on a file: the graph pauses on
the ask, a person decides, and the thread resumes (from another process than the one that
asked) with the decision; the node's side effect happens at most once."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.types import Command

from approvals.client import ApprovalsClient, ApprovalsError
from approvals.client.integrations.langgraph import resume
from tests.e2e.langgraph_app import build
from tests.e2e.test_client import approve_what_waits, stack
from tests.e2e.test_edits import edit_and_approve
from tests.examples import example
from tests.helpers import eventually, send

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["stack"]  # the fixture, shared with the client's tests
ROOT = Path(__file__).parents[2]


def url_of(client: ApprovalsClient) -> str:
    return client.nc.connected_url.geturl()  # type: ignore[union-attr]


async def ask_in_another_process(client: ApprovalsClient, tmp_path: Path, thread: str) -> Any:
    """Run the graph to its interrupt in a subprocess, kill it there, return the interrupt."""
    asking = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.e2e.langgraph_app", url_of(client),
        str(tmp_path / "checkpoints.db"), str(tmp_path / "effects.jsonl"), thread,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert asking.stdout is not None
    line = await asyncio.wait_for(asking.stdout.readline(), timeout=60)
    if asking.returncode is None and line:
        asking.kill()
    _, err = await asking.communicate()
    assert line, err.decode()
    return json.loads(line)


@pytest.fixture
async def saver(tmp_path: Path) -> AsyncIterator[AsyncSqliteSaver]:
    """A new checkpointer on the checkpoint file the subprocess wrote: a new process's view."""
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "checkpoints.db")) as s:
        yield s


def effects(tmp_path: Path) -> list[Any]:
    path = tmp_path / "effects.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.timeout(120)
async def test_approved_after_the_asking_process_was_killed_runs_once(
    stack: ApprovalsClient, tmp_path: Path, saver: AsyncSqliteSaver
) -> None:
    asked = await ask_in_another_process(stack, tmp_path, "t-approved")
    assert asked["web_url"].endswith(asked["approval_id"])
    assert asked["thread_id"] == "t-approved"
    assert effects(tmp_path) == []  # Check: nothing ran before the decision
    graph = build(stack, saver, tmp_path / "effects.jsonl")
    await approve_what_waits(stack)
    done = await resume(graph, stack, asked["approval_id"], thread_id="t-approved")
    assert done is not None
    assert done["result"] == "sent [1, 2, 3]"
    assert effects(tmp_path) == [{"rows": [1, 2, 3]}]
    # Check: the decision delivered again resumes nothing, runs nothing.
    again = await resume(graph, stack, asked["approval_id"], thread_id="t-approved")
    assert again is None
    config: Any = {"configurable": {"thread_id": "t-approved"}}
    await graph.ainvoke(Command(resume={"approval_id": asked["approval_id"]}), config)
    assert effects(tmp_path) == [{"rows": [1, 2, 3]}]

    async def redeemed() -> bool:  # the view follows the command service
        return (await stack.get(asked["approval_id"])).redeemed_at is not None

    await eventually(redeemed)


@pytest.mark.timeout(120)
async def test_two_resumers_at_once_run_the_action_once(
    stack: ApprovalsClient, tmp_path: Path, saver: AsyncSqliteSaver
) -> None:
    asked = await ask_in_another_process(stack, tmp_path, "t-twice")
    await approve_what_waits(stack)
    graph = build(stack, saver, tmp_path / "effects.jsonl")
    outcomes = await asyncio.gather(
        *(resume(graph, stack, asked["approval_id"], thread_id="t-twice") for _ in range(2)),
        return_exceptions=True,
    )
    # Check: one of them ran it; the other found it resumed, or was refused the redeem.
    assert effects(tmp_path) == [{"rows": [1, 2, 3]}]
    assert sum(isinstance(o, dict) and o["result"] == "sent [1, 2, 3]" for o in outcomes) == 1
    for other in outcomes:
        assert (
            other is None
            or isinstance(other, dict)
            or (isinstance(other, ApprovalsError) and other.code == "already_redeemed")
        ), other


@pytest.mark.timeout(120)
async def test_approved_with_edits_runs_the_edited_payload(
    stack: ApprovalsClient, tmp_path: Path, saver: AsyncSqliteSaver
) -> None:
    asked = await ask_in_another_process(stack, tmp_path, "t-edits")
    reply = await edit_and_approve(stack, asked["approval_id"],
                                   {"proposed_payload": {"rows": [2]}})  # fmt: skip
    assert reply["ok"] is True, reply
    graph = build(stack, saver, tmp_path / "effects.jsonl")
    done = await resume(graph, stack, asked["approval_id"], thread_id="t-edits")
    assert done is not None
    assert done["result"] == "sent [2]"
    assert effects(tmp_path) == [{"rows": [2]}]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("verb", "body", "result"),
    [
        ("reject", {"reason": "not this week", "rerun": True},
         "rejected: not this week rerun=True"),
        ("respond", {"message": "Which rows, and why?"},
         "responded: Which rows, and why? rerun=False"),
        ("cancel", {"by": "service:agent", "reason": "withdrawn"},
         "cancelled: withdrawn rerun=False"),
    ],
)  # fmt: skip
async def test_a_decision_other_than_approval_resumes_without_running(
    stack: ApprovalsClient, tmp_path: Path, saver: AsyncSqliteSaver,
    verb: str, body: dict[str, Any], result: str,
) -> None:  # fmt: skip
    thread = f"t-{verb}"
    asked = await ask_in_another_process(stack, tmp_path, thread)
    who = {} if verb == "cancel" else {"approver": "user:ana"}
    reply = await send(stack, verb, {"approval_id": asked["approval_id"], **who, **body})
    assert reply["ok"] is True, reply
    graph = build(stack, saver, tmp_path / "effects.jsonl")
    done = await resume(graph, stack, asked["approval_id"], thread_id=thread)
    assert done is not None
    assert done["result"] == result
    assert effects(tmp_path) == []


@pytest.mark.timeout(120)
async def test_an_expired_request_resumes_without_running(
    stack: ApprovalsClient, tmp_path: Path, saver: AsyncSqliteSaver
) -> None:
    graph = build(stack, saver, tmp_path / "effects.jsonl")
    config: Any = {"configurable": {"thread_id": "t-expired"}}
    # The node's request lives one second; then the deadline passed and it expires.
    paused = await graph.ainvoke({"rows": [5], "expires_in_s": 1}, config)
    approval_id = paused["__interrupt__"][0].value["approval_id"]
    expired: dict[str, Any] = {}

    async def expire() -> bool:
        body = {"approval_id": approval_id, "by": "service:timer"}
        expired.update(await send(stack, "expire", body))
        return bool(expired["ok"] or expired["error"]["code"] == "already_decided")

    await eventually(expire, within_s=30)
    done = await resume(graph, stack, approval_id, thread_id="t-expired")
    assert done is not None
    assert done["result"].startswith("expired:")
    assert effects(tmp_path) == []


async def test_an_action_that_needs_no_approval_never_pauses(
    stack: ApprovalsClient, tmp_path: Path, saver: AsyncSqliteSaver
) -> None:
    graph = build(stack, saver, tmp_path / "effects.jsonl")
    config: Any = {"configurable": {"thread_id": "t-read"}}
    done = await graph.ainvoke({"rows": [9], "action": {"kind": "read", "mode": "live"}}, config)
    assert "__interrupt__" not in done
    assert done["result"] == "sent [9]"
    assert effects(tmp_path) == [{"rows": [9]}]


@pytest.mark.timeout(120)
async def test_the_docs_langgraph_example_runs_as_written(stack: ApprovalsClient) -> None:
    env = {**os.environ, "NATS_URL": url_of(stack)}
    running = await asyncio.create_subprocess_exec(
        sys.executable, "-c", example("langgraph"), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert running.stdout is not None
    first = await asyncio.wait_for(running.stdout.readline(), timeout=60)
    assert first.decode().startswith("waiting for http"), first
    await approve_what_waits(stack)
    out, err = await asyncio.wait_for(running.communicate(), timeout=60)
    assert running.returncode == 0, (out.decode(), err.decode())
    assert out.decode().splitlines() == ["enriched [1, 2]"]
