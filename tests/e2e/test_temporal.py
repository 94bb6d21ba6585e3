"""The Temporal integration against a real Temporal dev server and the real command service and
projection on a real nats-server and SQLite: a workflow asks with ``approval()`` and waits; a
person decides; the resume service (``approvals temporal-resumer``, a process of its own)
signals the workflow, which resumes by itself. The worker and the resume service are killed and
started again while approvals wait; the action runs at most once and each outcome is signalled
once."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError

from approvals.client import ApprovalsClient
from approvals.client.integrations.temporal import SIGNAL, ApprovalActivities, Decision
from approvals.schemas import events
from approvals.services.runtime.settings import Settings
from approvals.services.temporal.resumer import Resumer
from tests.e2e.agent_stack import NOT_APPROVED, decide, shown, url_of
from tests.e2e.temporal_stack import resumer, temporal, temporal_address, worker
from tests.e2e.test_client import approve_what_waits
from tests.e2e.test_edits import edit_and_approve
from tests.examples import example
from tests.helpers import eventually, send

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from temporalio.client import Client, WorkflowHandle

__all__ = ["temporal", "temporal_address"]  # the fixtures
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


class Scene:
    """The worker and the resume service running, and what a test does with them."""

    def __init__(self, stack: ApprovalsClient, temporal: Client, tmp_path: Path,
                 address: str) -> None:  # fmt: skip
        self.stack, self.temporal = stack, temporal
        self.queue = f"q-{uuid.uuid4().hex[:8]}"
        self.effects = tmp_path / "effects.jsonl"
        self.worker = worker(url_of(stack), address, self.queue, self.effects)
        self.resumer = resumer(url_of(stack), address, tmp_path / "resumer.log")

    async def start(
        self, rows: list[int], expires_in_s: int | None = None, action: Any = None
    ) -> WorkflowHandle[Any, Any]:
        return await self.temporal.start_workflow(
            "SendRows", args=[rows, expires_in_s, action], id=f"send-{uuid.uuid4().hex[:8]}",
            task_queue=self.queue,
        )  # fmt: skip

    async def asked(self, handle: WorkflowHandle[Any, Any]) -> str:
        """The id of the approval the workflow asked for, once the inbox shows it."""
        found: list[str] = []

        async def requested() -> bool:
            async for _, event in self.stack.events():
                if isinstance(event, events.Requested) and event.skill_execution_id == (
                    f"temporal:default:{handle.id}"
                ):
                    found.append(str(event.approval_id))
            return bool(found)

        await eventually(requested, within_s=30)
        await shown(self.stack, found[0])
        return found[0]

    def sent(self) -> list[Any]:
        """What the ``send`` activity sent, one entry a send."""
        path = self.effects
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def signals(handle: WorkflowHandle[Any, Any]) -> int:
    """How many outcome signals the workflow's history holds."""
    history = await handle.fetch_history()
    return sum(
        1 for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        and e.workflow_execution_signaled_event_attributes.signal_name == SIGNAL
    )  # fmt: skip


@pytest.fixture
async def scene(
    stack: ApprovalsClient, temporal: Client, tmp_path: Path, temporal_address: str
) -> AsyncIterator[Scene]:
    scene = Scene(stack, temporal, tmp_path, temporal_address)
    await scene.worker.start()
    await scene.resumer.start()
    try:
        yield scene
    finally:
        await scene.worker.kill()
        await scene.resumer.kill()


async def finished(handle: WorkflowHandle[Any, Any], within_s: float = 30.0) -> str:
    """The workflow's result: it resumed by itself (nobody but the resume service tells it)."""
    return str(await asyncio.wait_for(handle.result(), timeout=within_s))


async def test_approved_resumes_by_itself_and_runs_once(scene: Scene) -> None:
    handle = await scene.start([1, 2, 3])
    approval_id = await scene.asked(handle)
    assert scene.sent() == []  # Check: nothing ran before the decision
    # Check: a person approves; the workflow resumes by itself and sends once.
    approval = await shown(scene.stack, approval_id)
    reply = await send(scene.stack, "approve", {"approval_id": approval_id,
                       "approver": "user:ana", "digest": approval.digest})  # fmt: skip
    assert reply["ok"], reply
    decided_at = time.monotonic()  # the decision is stored; the rest is the resume's path
    assert await finished(handle) == "sent [1, 2, 3]"
    print(f"resumed {time.monotonic() - decided_at:.3f} s after the decision")
    assert scene.sent() == [{"rows": [1, 2, 3]}]
    assert await signals(handle) == 1
    # Check: the approved version redeemed again (a retried activity) is refused.
    decision = Decision.of(await scene.stack.get(approval_id))
    with pytest.raises(ApplicationError) as refused:
        await ApprovalActivities(scene.stack).redeem(decision, executor="service:agent")
    assert refused.value.type == "already_redeemed"
    # Check: the workflow run again under its id finds the same approval, decided, and its
    # send is refused the redeem: the rows are not sent a second time.
    again = await scene.temporal.start_workflow(
        "SendRows", args=[[1, 2, 3], None, None], id=handle.id, task_queue=scene.queue
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(again.result(), timeout=30)
    assert isinstance(failed.value.cause, ActivityError)
    assert isinstance(failed.value.cause.cause, ApplicationError)
    assert failed.value.cause.cause.type == "already_redeemed"
    assert scene.sent() == [{"rows": [1, 2, 3]}]


async def test_approved_with_edits_runs_the_edited_payload(scene: Scene) -> None:
    handle = await scene.start([1, 2, 3])
    approval_id = await scene.asked(handle)
    reply = await edit_and_approve(scene.stack, approval_id, {"proposed_payload": {"rows": [2]}})
    assert reply["ok"] is True, reply
    assert await finished(handle) == "sent [2]"
    assert scene.sent() == [{"rows": [2]}]


@pytest.mark.parametrize(("verb", "body", "result"), NOT_APPROVED)
async def test_a_decision_other_than_approval_resumes_without_running(
    scene: Scene, verb: str, body: dict[str, Any], result: str
) -> None:
    handle = await scene.start([4])
    approval_id = await scene.asked(handle)
    who = {} if verb == "cancel" else {"approver": "user:ana"}
    reply = await send(scene.stack, verb, {"approval_id": approval_id, **who, **body})
    assert reply["ok"] is True, reply
    assert await finished(handle) == result
    assert scene.sent() == []


async def test_an_expired_request_resumes_without_running(scene: Scene) -> None:
    handle = await scene.start([5], expires_in_s=1)
    approval_id = await scene.asked(handle)
    expired: dict[str, Any] = {}

    async def expire() -> bool:  # the deadline passes; the timer (here: the test) expires it
        expired.update(await send(scene.stack, "expire",
                                  {"approval_id": approval_id, "by": "service:timer"}))  # fmt: skip
        return bool(expired["ok"] or expired["error"]["code"] == "already_decided")

    await eventually(expire, within_s=30)
    assert await finished(handle) == "expired: None rerun=False"
    assert scene.sent() == []


async def test_the_resume_service_killed_while_waiting_loses_nothing(scene: Scene) -> None:
    handle = await scene.start([6])
    approval_id = await scene.asked(handle)
    # Check: the resume service is killed; the decision is made while it is down.
    await scene.resumer.kill()
    await decide(scene.stack, approval_id, "approve")
    # Check: started again, it signals the workflow, once; the action runs once.
    await scene.resumer.start()
    assert await finished(handle) == "sent [6]"
    assert await signals(handle) == 1
    assert scene.sent() == [{"rows": [6]}]


async def test_the_worker_killed_while_waiting_resumes_once(
    scene: Scene, stack: ApprovalsClient, temporal: Client
) -> None:
    handle = await scene.start([7])
    approval_id = await scene.asked(handle)
    # Check: the worker is killed while the approval waits; the person approves meanwhile.
    await scene.worker.kill()
    await decide(stack, approval_id, "approve")

    async def signalled() -> bool:  # kept in the workflow's history while no worker runs
        return await signals(handle) == 1

    await eventually(signalled, within_s=30)
    # Check: the same ending handled again (a resume service that crashed before its ack)
    # adds no signal: Temporal drops the repeat by its request id.
    ending = [e async for _, e in stack.events(approval_id) if isinstance(e, events.Approved)]
    again = Resumer(stack.nc, Settings(nats_url=url_of(stack)), temporal)
    assert await again.resume(ending[0]) is None
    assert await again.resume(ending[0]) is None
    assert await signals(handle) == 1
    # Check: a later signal for the same approval (another sender, its own request id) is kept
    # out by the workflow: the first outcome stands.
    late = Decision(status="rejected", action={}, approval_id=approval_id, reason="late")
    await handle.signal(SIGNAL, late)
    assert await signals(handle) == 2
    # Check: a new worker replays the workflow, reads the signals, and sends once.
    await scene.worker.start()
    assert await finished(handle) == "sent [7]"
    assert scene.sent() == [{"rows": [7]}]


async def test_an_action_that_needs_no_approval_never_waits(scene: Scene) -> None:
    read = {"kind": "read", "mode": "live"}
    handle = await scene.start([9], action=read)
    assert await finished(handle) == "sent [9]"
    assert scene.sent() == [{"rows": [9]}]
    assert await signals(handle) == 0


async def test_the_docs_temporal_example_runs_as_written(
    scene: Scene, temporal_address: str, tmp_path: Path
) -> None:
    env = {**os.environ, "NATS_URL": url_of(scene.stack), "TEMPORAL_ADDRESS": temporal_address}
    # A file, as a user runs it: Temporal's sandbox reloads a workflow's module from its file.
    script = tmp_path / "enrich.py"
    script.write_text(example("temporal"))
    running = await asyncio.create_subprocess_exec(
        sys.executable, script, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert running.stdout is not None
    first = await asyncio.wait_for(running.stdout.readline(), timeout=60)
    if not first.decode().startswith("waiting for enrich-"):
        running.kill()
        pytest.fail(f"{first!r} {(await running.communicate())[1].decode()[-3000:]}")
    await approve_what_waits(scene.stack)
    out, err = await asyncio.wait_for(running.communicate(), timeout=60)
    assert running.returncode == 0, (out.decode(), err.decode())
    assert out.decode().splitlines() == ["enriched [1, 2]"]


async def test_a_refused_ask_fails_the_workflow_with_the_code(scene: Scene) -> None:
    handle = await scene.start([10], action={"kind": "launch_rockets", "mode": "live"})
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), timeout=30)
    # Check: not retried for ever: the workflow fails with the stable code, nothing ran.
    assert isinstance(failed.value.cause, ActivityError)
    assert isinstance(failed.value.cause.cause, ApplicationError)
    assert failed.value.cause.cause.type == "invalid"
    assert scene.sent() == []
