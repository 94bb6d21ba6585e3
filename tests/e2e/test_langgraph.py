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
from typing import TYPE_CHECKING, Any, cast

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.types import Command

from approvals.client import ApprovalsClient, ApprovalsError, ApprovalsHttpClient
from approvals.client.integrations.langgraph import (
    Followed,
    execution_id,
    follow,
    resume,
    thread_of,
)
from tests.e2e.agent_stack import NOT_APPROVED, decide
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
@pytest.mark.parametrize(("verb", "body", "result"), NOT_APPROVED)
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


# -- the follower: resumes the threads by itself as their approvals end ---------------------


class Follower:
    """``python -m tests.e2e.langgraph_app follow ...``: a follower in its own process, which
    keeps its place in ``position`` and prints a line per ending it read."""

    def __init__(self, client: ApprovalsClient, tmp_path: Path, position: str) -> None:
        self.args = ("follow", url_of(client), str(tmp_path / "checkpoints.db"),
                     str(tmp_path / "effects.jsonl"), str(tmp_path / position))  # fmt: skip
        self.process: asyncio.subprocess.Process | None = None
        self.since = -1

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.e2e.langgraph_app", *self.args, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self.since = (await self.line())["since"]

    async def line(self) -> dict[str, Any]:
        assert self.process is not None
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=60)
        if not line:
            _, err = await self.process.communicate()
            raise AssertionError(f"the follower ended: {err.decode()}")
        read: dict[str, Any] = json.loads(line)
        return read

    async def ending_of(self, approval_id: str) -> dict[str, Any]:
        """The line of the ending of ``approval_id``, once this follower handled it."""
        while (read := await self.line()).get("approval_id") != approval_id:
            pass
        return read

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.communicate()


async def result_of(saver: AsyncSqliteSaver, thread: str) -> Any:
    """The thread's ``result`` as its checkpoints hold it now (None while paused)."""
    state = await saver.aget_tuple({"configurable": {"thread_id": thread}})
    return None if state is None else state.checkpoint["channel_values"].get("result")


async def following(graph: Any, client: ApprovalsClient, into: list[Followed]) -> None:
    async for followed in follow(graph, client):
        into.append(followed)


@pytest.mark.timeout(120)
async def test_the_follower_resumes_an_approved_thread_by_itself(
    stack: ApprovalsClient, tmp_path: Path, saver: AsyncSqliteSaver
) -> None:
    asked = await ask_in_another_process(stack, tmp_path, "t-follow")
    graph = build(stack, saver, tmp_path / "effects.jsonl")
    seen: list[Followed] = []
    task = asyncio.create_task(following(graph, stack, seen))
    try:
        await approve_what_waits(stack)

        async def completed() -> bool:
            return await result_of(saver, "t-follow") == "sent [1, 2, 3]"

        await eventually(completed)
        assert effects(tmp_path) == [{"rows": [1, 2, 3]}]
        assert [(f.approval_id, f.status, f.thread_id) for f in seen] == [
            (asked["approval_id"], "approved", "t-follow")
        ]
        assert seen[0].result == {"rows": [1, 2, 3], "result": "sent [1, 2, 3]"}
    finally:
        task.cancel()


@pytest.mark.timeout(120)
async def test_the_follower_resumes_a_rejected_thread_with_the_reason(
    stack: ApprovalsClient, tmp_path: Path, saver: AsyncSqliteSaver
) -> None:
    asked = await ask_in_another_process(stack, tmp_path, "t-follow-no")
    graph = build(stack, saver, tmp_path / "effects.jsonl")
    task = asyncio.create_task(following(graph, stack, []))
    try:
        body = {"approval_id": asked["approval_id"], "approver": "user:ana",
                "reason": "not these rows"}  # fmt: skip
        reply = await send(stack, "reject", body)
        assert reply["ok"] is True, reply

        async def completed() -> bool:
            return await result_of(saver, "t-follow-no") is not None

        await eventually(completed)
        assert await result_of(saver, "t-follow-no") == "rejected: not these rows rerun=False"
        assert effects(tmp_path) == []
    finally:
        task.cancel()


@pytest.mark.timeout(180)
async def test_a_decision_made_while_the_follower_was_down_resumes_when_it_restarts(
    stack: ApprovalsClient, tmp_path: Path, saver: AsyncSqliteSaver
) -> None:
    follower = Follower(stack, tmp_path, "position")
    await follower.start()
    assert follower.since == 0  # Check: a first start reads from the beginning
    first = await ask_in_another_process(stack, tmp_path, "t-first")
    await decide(stack, first["approval_id"], "approve")
    assert (await follower.ending_of(first["approval_id"]))["result"]["result"] == "sent [1, 2, 3]"
    second = await ask_in_another_process(stack, tmp_path, "t-second")
    await follower.kill()  # while the approval waits
    await decide(stack, second["approval_id"], "approve")
    assert await result_of(saver, "t-second") is None  # Check: nobody resumed it while down
    restarted = Follower(stack, tmp_path, "position")
    await restarted.start()
    try:
        assert restarted.since > 0  # it goes on after what it handled before
        resumed = await restarted.ending_of(second["approval_id"])
        assert resumed["thread_id"] == "t-second"
        assert resumed["sequence"] > restarted.since
        assert await result_of(saver, "t-second") == "sent [1, 2, 3]"
        assert effects(tmp_path) == [{"rows": [1, 2, 3]}, {"rows": [1, 2, 3]}]  # once each
    finally:
        await restarted.kill()


@pytest.mark.timeout(180)
async def test_two_followers_at_once_run_the_action_once(
    stack: ApprovalsClient, tmp_path: Path, saver: AsyncSqliteSaver
) -> None:
    followers = [Follower(stack, tmp_path, f"position-{n}") for n in range(2)]
    await asyncio.gather(*(f.start() for f in followers))
    try:
        asked = await ask_in_another_process(stack, tmp_path, "t-both")
        await decide(stack, asked["approval_id"], "approve")
        lines = await asyncio.gather(*(f.ending_of(asked["approval_id"]) for f in followers))
        # Check: both read it; one ran the action, the other found nothing waiting, or was
        # refused the redeem.
        assert [line["thread_id"] for line in lines] == ["t-both", "t-both"]
        assert sum(line["result"] is not None for line in lines) == 1
        assert effects(tmp_path) == [{"rows": [1, 2, 3]}]
        assert await result_of(saver, "t-both") == "sent [1, 2, 3]"
    finally:
        await asyncio.gather(*(f.kill() for f in followers))


async def test_the_follower_needs_the_bus_client(tmp_path: Path, saver: AsyncSqliteSaver) -> None:
    async with ApprovalsHttpClient("http://127.0.0.1:9", "default", "apk_x.y") as http:
        graph = build(cast("Any", http), saver, tmp_path / "effects.jsonl")
        with pytest.raises(TypeError, match="bus client"):
            await anext(follow(graph, cast("Any", http)))


def test_a_follower_leaves_requests_not_asked_by_a_graph() -> None:
    assert thread_of("langgraph:t-1") == "t-1"
    assert thread_of("temporal:default:wf-1") is None
    assert thread_of("langgraph:") is None
    with pytest.raises(ValueError, match="too long"):
        execution_id("t" * 200)
