"""The whole flow around one action, the same over NATS and over HTTP: ask (or resume), wait,
redeem exactly what was approved, run, report. ``Caller`` is what both clients share: the four
calls the flow needs, and ``gate`` built on them; ``require_approval`` gates a function.

Both are resumable: a request with the same idempotency key, from any process, finds the same
approval, so an agent may exit while a person decides and come back later.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import inspect
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import msgspec

from approvals.client.errors import ApprovalPending, denial
from approvals.schemas.codec import canonical_encoder
from approvals.schemas.commands import Action
from approvals.schemas.digest import action_digest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from approvals.schemas.queries import ApprovalView
    from approvals.schemas.replies import AnyReply

P = ParamSpec("P")
T = TypeVar("T")
DECIDED = frozenset({"approved", "rejected", "expired", "cancelled", "responded"})
WAIT_CHUNK_S = 300.0  # the longest single wait the projection (and the gateway) accepts


class Caller(abc.ABC):
    """A client of the service, whichever door it uses; refusals raise ``ApprovalsError``."""

    @abc.abstractmethod
    async def request(self, **request: Any) -> AnyReply:
        """Ask before acting (the fields of a ``request`` command)."""

    @abc.abstractmethod
    async def wait(self, approval_id: Any, timeout_s: float) -> ApprovalView:
        """The approval once decided, or as it stands after ``timeout_s`` seconds."""

    @abc.abstractmethod
    async def redeem(
        self, approval_id: Any, *, action: Action | dict[str, Any], payload: Any, executor: str
    ) -> AnyReply:
        """The final check before running: the digest of what is about to run."""

    @abc.abstractmethod
    async def report(
        self,
        approval_id: Any,
        *,
        credits_used: float,
        outcome: str,
        by: str,
        summary: str = "",
        external_refs: tuple[str, ...] = (),
    ) -> AnyReply:
        """What the run did; over the ceiling is recorded and flagged."""

    def gate(
        self,
        *,
        action: Action | dict[str, Any],
        payload: Any,
        requested_by: str,
        approval_id: Any = None,
        wait_s: float = 30.0,
        **request: Any,
    ) -> contextlib.AbstractAsyncContextManager[Run]:
        """Run the body only once approved: request (or resume ``approval_id``), wait up to
        ``wait_s``, redeem, and report when the body ends (``failed`` if it raised).

        Raises ApprovalPending when nobody has decided in time (the request stays; enter the
        gate again later, from any process, with the same ``idempotency_key`` or the id) and
        ApprovalDenied when it was rejected, expired or cancelled. Without an
        ``idempotency_key`` one is made from the skill, its execution id and the action.

        An approver may have approved a narrower version (edits): the body then runs that one,
        ``run.action`` and ``run.payload``, never what was asked; the redeem names it."""
        return _gate(self, action, payload, requested_by, approval_id, wait_s, request)


class Run:
    """What the gated body may see and set: the approval, and the credits the run used."""

    def __init__(self, approval: ApprovalView | None, action: Action, payload: Any) -> None:
        self.approval = approval  # None when the action did not need approval
        self.action = action  # what to run: the approved version (an approver may have edited)
        self.payload = payload
        self.credits_used = 0.0
        self.summary = ""
        self.external_refs: tuple[str, ...] = ()
        self.outcome = "succeeded"


@contextlib.asynccontextmanager
async def _gate(
    client: Caller,
    action: Action | dict[str, Any],
    payload: Any,
    requested_by: str,
    approval_id: Any,
    wait_s: float,
    request: dict[str, Any],
) -> AsyncIterator[Run]:
    action = msgspec.convert(action, Action)
    if approval_id is None:
        key = request.pop("idempotency_key", None) or _key(request, action, payload)
        asked = await client.request(
            **request, requested_by=requested_by, action=action, proposed_payload=payload,
            idempotency_key=key,
        )  # fmt: skip
        if asked.outcome == "not_required" or asked.approval is None:
            yield Run(None, action, payload)
            return
        approval_id = asked.approval.id
    approval = await client.wait(approval_id, wait_s)
    if approval.status == "pending":
        raise ApprovalPending(str(approval.id), approval.web_url)
    if approval.status != "approved":
        raise denial(approval)
    if approval.approved_action is not None:  # the version approved, edited or not
        action, payload = approval.approved_action, approval.approved_payload
    await client.redeem(approval.id, action=action, payload=payload, executor=requested_by)
    run = Run(approval, action, payload)
    try:
        yield run
    except BaseException as error:
        await client.report(approval.id, credits_used=run.credits_used, outcome="failed",
                            by=requested_by, summary=f"{type(error).__name__}: {error}"[:2000],
                            external_refs=run.external_refs)  # fmt: skip
        raise
    await client.report(approval.id, credits_used=run.credits_used, outcome=run.outcome,
                        by=requested_by, summary=run.summary,
                        external_refs=run.external_refs)  # fmt: skip


def _key(request: dict[str, Any], action: Action, payload: Any) -> str:
    digest = action_digest(action, payload)
    return f"{request.get('skill_name')}:{request.get('skill_execution_id')}:{digest[:16]}"


def require_approval(
    client: Caller,
    *,
    action: Action | dict[str, Any],
    requested_by: str,
    skill_name: str,
    title: str,
    risk_level: str = "medium",
    summary: str = "",
    wait_s: float = 30.0,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Gate an async function on approval; its arguments are the proposed payload.

    The same call (same function, same arguments) made again, in this process or another,
    resumes the same approval; while nobody has decided it raises ApprovalPending."""

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        async def gated(*args: P.args, **kwargs: P.kwargs) -> T:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            payload = {"function": fn.__qualname__, "arguments": dict(bound.arguments)}
            call = hashlib.sha256(canonical_encoder.encode(payload)).hexdigest()[:16]
            async with client.gate(
                action=action, payload=payload, requested_by=requested_by,
                skill_name=skill_name, skill_execution_id=f"call-{call}", title=title,
                summary=summary, risk_level=risk_level, wait_s=wait_s,
            ) as run:  # fmt: skip
                # The arguments approved: an approver may have edited them.
                approved = run.payload.get("arguments") if isinstance(run.payload, dict) else None
                if isinstance(approved, dict):
                    bound.arguments.update(approved)
                return await fn(*bound.args, **bound.kwargs)

        return gated

    return decorate
