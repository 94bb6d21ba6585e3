"""LangGraph: ask this service inside a node or tool, pause the graph with ``interrupt()``
while a person decides, and resume the right thread with ``Command(resume=...)`` once they have.

    decision = await require(client, action=..., payload=..., requested_by=..., title=...)
    if decision.approved:
        send(decision.payload)  # the approved version: an approver may have edited it

``require`` pauses only when a person must decide (not when the action needs no approval or a
standing permission or grant covers it). ``follow`` resumes the paused threads by itself as their
approvals end: it reads the workspace's events and calls ``resume`` for each ending of a request
``require`` asked (its ``skill_execution_id`` is ``langgraph:<thread id>``). ``resume`` can also
be called by hand, from any process with the graph's checkpointer; a decision delivered twice
resumes the thread once, and an approved action is redeemed (single use) before the node goes
on, so it never runs twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import TYPE_CHECKING, Any

import msgspec
from langgraph.config import get_config
from langgraph.types import Command, interrupt

from approvals.client.bus import ApprovalsClient
from approvals.client.errors import ApprovalPending, ApprovalsError
from approvals.client.integrations.tool_calls import Outcome
from approvals.schemas import events
from approvals.schemas.commands import Action
from approvals.schemas.digest import action_digest

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from langgraph.pregel import Pregel

    from approvals.client.flow import Caller
    from approvals.schemas.queries import ApprovalView

__all__ = ["Decision", "Followed", "follow", "require", "resume", "thread_of"]

log = logging.getLogger(__name__)
PREFIX = "langgraph:"  # skill_execution_id of a request asked by require(): the thread after it
ENDINGS = (events.Approved, events.Rejected, events.Responded, events.Expired,
           events.Cancelled)  # fmt: skip


class Decision(msgspec.Struct, Outcome, frozen=True, kw_only=True):
    """What became of the ask. ``status``: ``not_required``, ``approved``, ``rejected``,
    ``responded``, ``expired`` or ``cancelled``. ``action`` and ``payload`` are what may run
    (approved: the approved version, already redeemed); ``reason`` is why it was rejected, or
    the person's message when they answered instead of deciding; ``rerun``: they ask for a new
    request."""

    status: str
    action: Action
    payload: Any
    approval_id: str | None = None
    decided_by: str | None = None
    reason: str | None = None
    rerun: bool = False
    web_url: str = ""


async def require(
    client: Caller,
    *,
    action: Action | dict[str, Any],
    payload: Any,
    requested_by: str,
    title: str,
    key: str = "",
    wait_s: float = 5.0,
    **request: Any,
) -> Decision:
    """Ask inside a node (or a tool it calls); pause the graph while a person decides.

    The idempotency key is made of the thread, the node's task and the action's digest (and
    ``key``, e.g. a tool call id, when one node asks more than once), so the node run again
    after the resume finds the same approval. The request's ``skill_execution_id`` is
    ``langgraph:<thread id>``: that is how ``follow`` knows which thread to resume (a thread id
    longer than 190 characters is a ValueError). Approved, it redeems the approved version
    before returning: run ``decision.payload``. A second redeem is refused
    (``already_redeemed``, an ApprovalsError), so a node run twice never runs the action twice.
    ``request``: other fields of the request (``summary``, ``risk_level``, ``skill_name``,
    ``expires_in_s``, ...)."""
    if "skill_execution_id" in request:
        raise TypeError("require() names the thread in skill_execution_id itself")
    action = msgspec.convert(action, Action)
    config = get_config()
    thread = str(config["configurable"]["thread_id"])
    execution = execution_id(thread)
    task = str(config["configurable"].get("checkpoint_ns", ""))
    digest = action_digest(action, payload)
    call = hashlib.sha256(f"{thread}\n{task}\n{key}\n{digest}".encode()).hexdigest()[:32]
    request.setdefault("skill_name", "langgraph")
    request.setdefault("summary", "")
    request.setdefault("risk_level", "medium")
    asked = await client.request(
        **request, requested_by=requested_by, title=title, action=action,
        skill_execution_id=execution,
        proposed_payload=payload, idempotency_key=f"langgraph:{call}",
    )  # fmt: skip
    if asked.outcome == "not_required" or asked.approval is None:
        return Decision(status="not_required", action=action, payload=payload)
    approval_id, status = str(asked.approval.id), asked.approval.status
    view = None
    while status == "pending":
        # The first run stops here; the run after ``resume`` gets the decision back and reads
        # it from the service (what was decided is the service's word, not the resume value's).
        interrupt({"approval_id": approval_id, "web_url": asked.approval.web_url,
                   "thread_id": thread, "title": title, "digest": digest})  # fmt: skip
        view = await client.wait(approval_id, wait_s)
        status = view.status
    view = view or await client.wait(approval_id, wait_s)  # approved at once, or replayed
    return await _decided(client, view, action, payload, requested_by)


async def _decided(
    client: Caller, view: ApprovalView, action: Action, payload: Any, executor: str
) -> Decision:
    if view.status == "pending":  # decided in the store, not yet in the view: ask again later
        raise ApprovalPending(str(view.id), view.web_url)
    if view.status == "approved":
        if view.approved_action is not None:  # the version approved, edited or not
            action, payload = view.approved_action, view.approved_payload
        await client.redeem(view.id, action=action, payload=payload, executor=executor)
    return Decision(
        status=view.status, action=action, payload=payload, approval_id=str(view.id),
        decided_by=view.decided_by, reason=view.reason, rerun=view.rerun, web_url=view.web_url,
    )  # fmt: skip


async def resume(
    graph: Pregel[Any, Any, Any, Any],
    client: Caller,
    approval_id: str,
    *,
    thread_id: str,
    wait_s: float = 30.0,
) -> dict[str, Any] | None:
    """Resume ``thread_id`` once ``approval_id`` is decided: wait up to ``wait_s`` for the
    decision (ApprovalPending if nobody decided), then ``Command(resume=...)`` the interrupt
    that asked for it; the graph's result. None when no interrupt of the thread waits for this
    approval (resumed already: a decision delivered again does nothing)."""
    config: Any = {"configurable": {"thread_id": thread_id}}
    state = await graph.aget_state(config)
    waiting = [i for i in state.interrupts if _asks(i.value, approval_id)]
    if not waiting:
        return None
    view = await client.wait(approval_id, wait_s)
    if view.status == "pending":
        raise ApprovalPending(approval_id, view.web_url)
    told = {"approval_id": approval_id, "status": view.status, "reason": view.reason}
    result: dict[str, Any] = await graph.ainvoke(
        Command(resume={i.id: told for i in waiting}), config
    )
    return result


def _asks(value: Any, approval_id: str) -> bool:
    return isinstance(value, dict) and value.get("approval_id") == approval_id


def execution_id(thread_id: str) -> str:
    """The ``skill_execution_id`` of a request asked by ``require`` in thread ``thread_id``."""
    named = f"{PREFIX}{thread_id}"
    if len(named) > 200:
        raise ValueError(
            f"thread id {thread_id[:40]!r}... is too long to name in a request (at most"
            f" {200 - len(PREFIX)} characters)"
        )
    return named


def thread_of(skill_execution_id: str) -> str | None:
    """The thread a request asked by ``require`` paused; None for any other request."""
    if not skill_execution_id.startswith(PREFIX):
        return None
    return skill_execution_id[len(PREFIX) :] or None


class Followed(msgspec.Struct, frozen=True, kw_only=True):
    """One ending ``follow`` read. ``sequence``: its place in the event stream (save it, and
    start again after it: ``follow(..., since=sequence)``); ``thread_id``: the thread that asked
    (None: not asked by ``require``); ``result``: the graph's result when this follower resumed
    the thread, None when nothing waited for this decision any more (resumed already, by
    another follower or by hand, or not a thread of this graph's checkpointer)."""

    sequence: int
    approval_id: str
    status: str
    thread_id: str | None = None
    result: dict[str, Any] | None = None


async def follow(
    graph: Pregel[Any, Any, Any, Any],
    client: ApprovalsClient,
    *,
    since: int = 0,
    wait_s: float = 30.0,
) -> AsyncGenerator[Followed]:
    """Resume the threads ``require`` paused as their approvals end, for as long as it is read.

    It reads the workspace's endings (``approved``, ``rejected``, ``responded``, ``expired``,
    ``cancelled``) from the event stream after sequence ``since``, with only what a workspace's
    caller may do on the bus, and calls ``resume`` for each request ``require`` asked. It
    yields a ``Followed`` for every ending, in stream order, after it was handled: save its
    ``sequence`` and pass it as ``since`` when the follower starts again, so a decision made
    while it was down resumes its thread then (``since=0``, the default, reads the workspace's
    whole history: right for a first start, slow for a long one). At least once: an ending read
    again finds no interrupt waiting and resumes nothing, and a node run twice is refused the
    second redeem (``already_redeemed``), so the action never runs twice. Two followers at once
    resume each thread once. Only over the bus (``ApprovalsClient``): the HTTP client cannot
    read the event stream (a TypeError)."""
    if not isinstance(client, ApprovalsClient):
        raise TypeError("follow() reads the event stream: it needs the bus client, ApprovalsClient")
    async with contextlib.aclosing(client.events(follow=True, since=since)) as feed:
        async for sequence, event in feed:
            if not isinstance(event, ENDINGS):
                continue
            approval_id = str(event.approval_id)
            view = await client.wait(approval_id, wait_s)  # the view may lag the stream
            thread = thread_of(view.skill_execution_id)
            result = None
            if thread is not None:
                try:
                    result = await resume(graph, client, approval_id, thread_id=thread,
                                          wait_s=wait_s)  # fmt: skip
                except ApprovalsError as error:
                    if error.code != "already_redeemed":
                        raise
                    log.info("%s was redeemed by another resume of %s", approval_id, thread)
            yield Followed(sequence=sequence, approval_id=approval_id, status=event.event_type,
                           thread_id=thread, result=result)  # fmt: skip
