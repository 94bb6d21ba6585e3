"""Temporal: a workflow asks this service with ``await approval(...)`` and waits, without
polling, until the resume service (``approvals temporal-resumer``) signals how it ended.

    decision = await approval(action=..., payload=..., requested_by=..., title=...)
    if decision.approved:
        await workflow.execute_activity(send, decision, ...)  # it calls redeem(...) first

The ask is an activity (``ApprovalActivities.ask``, registered on the worker) whose request is
idempotent per workflow id and step (``key``), so a retried activity or a replayed workflow
finds the same approval. Its ``skill_execution_id`` names the workflow,
``temporal:<namespace>:<workflow id>``: that is how the resume service knows whom to signal.
Each outcome is signalled as ``approvals.outcome`` with a request id made of the approval id and
the outcome (the Temporal server drops a repeat), and the workflow keeps the first outcome of
each approval, so a signal sent again changes nothing. The activity that runs the action redeems
the approved version first (``ApprovalActivities.redeem``): a redeem works once, so a retried
activity or a second workflow run never runs the action twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import msgspec
from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError

from approvals.client.errors import ApprovalsError
from approvals.client.integrations.tool_calls import Outcome
from approvals.schemas.commands import Action
from approvals.schemas.digest import action_digest

if TYPE_CHECKING:
    from approvals.client.flow import Caller
    from approvals.schemas.queries import ApprovalView

__all__ = ["SIGNAL", "ApprovalActivities", "Asking", "Decision", "approval", "workflow_of"]

SIGNAL = "approvals.outcome"  # the signal the resume service sends, a Decision as its argument
ASK = "approvals.ask"  # the activity that asks
PREFIX = "temporal:"  # skill_execution_id of a request asked from a workflow
ENDINGS = frozenset({"approved", "rejected", "responded", "expired", "cancelled"})
# Refusals of the ask worth trying again (the activity's retry policy); any other is final and
# fails the workflow's ask with the refusal's code as the ApplicationError's type.
RETRIED = frozenset({"unavailable", "internal", "rate_limited", "conflict"})


@dataclass(frozen=True, kw_only=True)
class Decision(Outcome):
    """What became of the ask. ``status``: ``not_required``, ``pending`` (only between the ask
    and the signal), ``approved``, ``rejected``, ``responded``, ``expired`` or ``cancelled``.
    ``action`` and ``payload`` are what may run (approved: the approved version, possibly
    edited by the approver); ``reason`` is why it was rejected, or the person's message when
    they answered instead of deciding; ``rerun``: they ask for a new request."""

    status: str
    action: dict[str, Any]
    payload: Any = None
    approval_id: str | None = None
    decided_by: str | None = None
    reason: str | None = None
    rerun: bool = False
    web_url: str = ""

    @classmethod
    def of(cls, view: ApprovalView) -> Decision:
        """The decision an approval shows (approved: the version approved)."""
        action, payload = view.action, view.proposed_payload
        if view.status == "approved" and view.approved_action is not None:
            action, payload = view.approved_action, view.approved_payload
        return cls(
            status=view.status, action=msgspec.to_builtins(action), payload=payload,
            approval_id=str(view.id), decided_by=view.decided_by, reason=view.reason,
            rerun=view.rerun, web_url=view.web_url,
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Asking:
    """The ask activity's argument: the request, less what the activity adds itself."""

    action: dict[str, Any]
    payload: Any
    requested_by: str
    title: str
    key: str = ""
    request: dict[str, Any] = field(default_factory=dict)


def execution_id(namespace: str, workflow_id: str) -> str:
    """The ``skill_execution_id`` of a request asked from workflow ``workflow_id``."""
    named = f"{PREFIX}{namespace}:{workflow_id}"
    if len(named) > 200:
        raise ApplicationError(
            f"workflow id {workflow_id[:40]!r}... is too long to name in a request (at most"
            f" {200 - len(PREFIX) - len(namespace) - 1} characters)",
            type="invalid", non_retryable=True,
        )  # fmt: skip
    return named


def workflow_of(skill_execution_id: str) -> tuple[str, str] | None:
    """``(namespace, workflow id)`` of a request asked from a workflow; None for any other."""
    if not skill_execution_id.startswith(PREFIX):
        return None
    namespace, _, workflow_id = skill_execution_id[len(PREFIX) :].partition(":")
    return (namespace, workflow_id) if namespace and workflow_id else None


class _Outcomes:
    """The signal handler: the first outcome signalled for each approval (a repeat is kept out)."""

    def __init__(self) -> None:
        self.told: dict[str, Decision] = {}

    def __call__(self, decision: Decision) -> None:
        if decision.approval_id is not None and decision.status in ENDINGS:
            self.told.setdefault(decision.approval_id, decision)


def _outcomes() -> _Outcomes:
    handler = workflow.get_signal_handler(SIGNAL)
    if isinstance(handler, _Outcomes):
        return handler
    outcomes = _Outcomes()
    workflow.set_signal_handler(SIGNAL, outcomes)  # buffered signals are handed over now
    return outcomes


async def approval(
    *,
    action: Action | dict[str, Any],
    payload: Any,
    requested_by: str,
    title: str,
    key: str = "",
    within: timedelta | None = None,
    ask_timeout: timedelta = timedelta(seconds=30),
    **request: Any,
) -> Decision:
    """Ask inside a workflow; wait (no polling) until the approval ends. Returns at once when
    the action needs no approval or a standing permission or grant covers it.

    Args:
        key: tells apart the asks of one workflow (a step name) when it asks more than once.
        within: how long to wait for the outcome; then ``asyncio.TimeoutError`` is raised
            (the request stays: it expires by its own ``expires_in_s``, and is signalled).
        ask_timeout: the ask activity's start-to-close timeout (retried while the service
            cannot answer; a final refusal fails it with the refusal's code as its type).
        request: other fields of the request (``summary``, ``risk_level``, ``skill_name``,
            ``expires_in_s``, ``payload_schema``, ...).
    """
    outcomes = _outcomes()
    # Checked in the activity: a refusal there fails the workflow with its code, not its task.
    plain = action if isinstance(action, dict) else msgspec.to_builtins(action)
    asking = Asking(action=plain, payload=payload, requested_by=requested_by, title=title,
                    key=key, request=request)  # fmt: skip
    asked: Decision = await workflow.execute_activity(
        ASK, asking, result_type=Decision, start_to_close_timeout=ask_timeout
    )
    if asked.status != "pending" or asked.approval_id is None:
        return asked
    approval_id = asked.approval_id
    await workflow.wait_condition(lambda: approval_id in outcomes.told, timeout=within)
    return outcomes.told[approval_id]


class ApprovalActivities:
    """The activities a worker registers (``activities=[*ApprovalActivities(client).all()]``),
    and ``redeem`` for the activity that runs an approved action."""

    def __init__(self, client: Caller, *, wait_s: float = 5.0) -> None:
        self.client = client
        self.wait_s = wait_s

    def all(self) -> list[Any]:
        return [self.ask]

    @activity.defn(name=ASK)
    async def ask(self, asking: Asking) -> Decision:
        """Request (idempotent per workflow id, ``key`` and the action's digest); ``pending``
        while a person must decide, else the decision as it stands."""
        info = activity.info()
        if info.workflow_id is None:
            raise ApplicationError("approvals.ask runs in a workflow (approval()), not alone",
                                   type="invalid", non_retryable=True)  # fmt: skip
        namespace = info.workflow_namespace or info.namespace
        try:
            return await self._ask(asking, namespace, info.workflow_id)
        except msgspec.ValidationError as error:
            raise ApplicationError(str(error), type="invalid", non_retryable=True) from None
        except ApprovalsError as error:
            if error.code in RETRIED:
                raise
            raise ApplicationError(str(error), error.details, type=error.code,
                                   non_retryable=True) from None  # fmt: skip

    async def _ask(self, asking: Asking, namespace: str, workflow_id: str) -> Decision:
        action = msgspec.convert(asking.action, Action)
        digest = action_digest(action, asking.payload)
        step = f"{namespace}\n{workflow_id}\n{asking.key}\n{digest}"
        request = {"skill_name": "temporal", "summary": "", "risk_level": "medium",
                   **asking.request}  # fmt: skip
        asked = await self.client.request(
            **request, requested_by=asking.requested_by, title=asking.title, action=action,
            proposed_payload=asking.payload,
            skill_execution_id=execution_id(namespace, workflow_id),
            idempotency_key=f"temporal:{hashlib.sha256(step.encode()).hexdigest()[:32]}",
        )  # fmt: skip
        if asked.outcome == "not_required" or asked.approval is None:
            return Decision(status="not_required", action=asking.action, payload=asking.payload)
        if asked.approval.status == "pending":
            return Decision(status="pending", action=asking.action, payload=asking.payload,
                            approval_id=str(asked.approval.id),
                            web_url=asked.approval.web_url)  # fmt: skip
        # Decided already (a grant, or asked again after the outcome): read what was decided.
        view = await self.client.wait(asked.approval.id, self.wait_s)
        if view.status == "pending":  # decided in the store, not yet in the view: retried
            raise ApplicationError(f"approval {view.id} is not decided in the view yet")
        return Decision.of(view)

    async def redeem(self, decision: Decision, *, executor: str) -> None:
        """Call in the activity that runs the action, before it acts: redeems the approved
        version, once. Raises a non-retryable ApplicationError ``already_redeemed`` when it was
        redeemed before (the action ran, or started, once), and ``not_approved`` when the
        decision was not an approval. Nothing to redeem when no approval was needed."""
        if decision.status == "not_required":
            return
        if decision.status != "approved" or decision.approval_id is None:
            raise ApplicationError(f"the decision was {decision.status}: nothing may run",
                                   type="not_approved", non_retryable=True)  # fmt: skip
        try:
            await self.client.redeem(decision.approval_id, action=decision.action,
                                     payload=decision.payload, executor=executor)  # fmt: skip
        except ApprovalsError as error:
            if error.code != "already_redeemed":
                raise
            raise ApplicationError(
                f"approval {decision.approval_id} was already used: the action ran (or"
                " started) once, and does not run again", type="already_redeemed",
                non_retryable=True,
            ) from None  # fmt: skip
