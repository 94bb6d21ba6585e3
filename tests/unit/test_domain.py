"""The Approval aggregate's invariants, through its decide functions and its projector."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from approvals.schemas import commands, events
from approvals.schemas.digest import action_digest
from approvals.schemas.replies import Delivery
from approvals.schemas.types import TERMINAL_STATUSES
from approvals.services.approvals import domain
from approvals.services.approvals.errors import (
    AlreadyDecided,
    ApprovalError,
    Conflict,
    DeadlinePassed,
    DigestMismatch,
    Forbidden,
    NotApproved,
)
from tests.workspaces import workspace

if TYPE_CHECKING:
    from collections.abc import Callable

APPROVAL_ID = UUID("0b8f5a52-7c1e-4d7a-9a51-1f2a3b4c5d6e")
WORKSPACE = "acme"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
EXPIRES_IN_S = 3600
DEADLINE = NOW + timedelta(seconds=EXPIRES_IN_S)
BEFORE = DEADLINE - timedelta(microseconds=1)
REQUESTER = "service:enricher"
ON_BEHALF_OF = "user:bob"
APPROVER = "user:carol"
OTHER_DIGEST = "0" * 64
WS = workspace(WORKSPACE)


def a_request(**changes: Any) -> commands.Request:
    fields: dict[str, Any] = {
        "requested_by": REQUESTER,
        "on_behalf_of": ON_BEHALF_OF,
        "skill_name": "crm-sync",
        "skill_execution_id": "exec-1",
        "title": "Sync 40 contacts",
        "summary": "Writes 40 contacts to HubSpot",
        "risk_level": "high",
        "action": commands.Action(
            kind="crm_write",
            mode="live",
            provider="hubspot",
            destination="crm:contacts",
            scope=commands.Scope(table="contacts", row_count=40),
            max_credits=40.0,
        ),
        "proposed_payload": {"set": {"lifecycle": "lead"}},
        "trace_id": "trace-1",
        "expires_in_s": EXPIRES_IN_S,
    }
    return commands.Request(**{**fields, **changes})


def requested(**changes: Any) -> events.Requested:
    return domain.request(
        a_request(**changes),
        approval_id=APPROVAL_ID,
        workspace_id=WORKSPACE,
        now=NOW,
        default_expiry_s=60,
    )


def pending(**changes: Any) -> domain.Approval:
    return domain.mutate(requested(**changes), None)


def approve_cmd(approver: str = APPROVER, digest: str | None = None) -> commands.Approve:
    digest = digest if digest is not None else requested().digest
    return commands.Approve(approval_id=APPROVAL_ID, approver=approver, digest=digest, reason="ok")


def reject_cmd(approver: str = APPROVER) -> commands.Reject:
    return commands.Reject(approval_id=APPROVAL_ID, approver=approver, reason="no", rerun=True)


def respond_cmd(approver: str = APPROVER) -> commands.Respond:
    return commands.Respond(approval_id=APPROVAL_ID, approver=approver, message="which list?")


def cancel_cmd(by: str = REQUESTER) -> commands.Cancel:
    return commands.Cancel(approval_id=APPROVAL_ID, by=by, reason="not needed")


def expire_cmd(by: str = "service:scheduler") -> commands.Expire:
    return commands.Expire(approval_id=APPROVAL_ID, by=by)


def deliver_cmd(by: str = "service:delivery") -> commands.Deliver:
    return commands.Deliver(approval_id=APPROVAL_ID, channel="slack", target="#ops", by=by)


VERBS: dict[str, Callable[[domain.Approval, datetime], events.Event]] = {
    "approve": lambda a, now: domain.approve(a, approve_cmd(), now, WS)[-1],
    "reject": lambda a, now: domain.reject(a, reject_cmd(), now, WS),
    "respond": lambda a, now: domain.respond(a, respond_cmd(), now, WS),
    "cancel": lambda a, now: domain.cancel(a, cancel_cmd(), now, WS),
    "expire": lambda a, now: domain.expire(a, expire_cmd(), now),
    "deliver": lambda a, now: domain.deliver(a, deliver_cmd(), now),
}
DECISIONS = ("approve", "reject", "cancel", "respond")
# Every verb but deliver, which records what a channel did whatever the approval's state.
DECIDING = sorted(set(VERBS) - {"deliver"})


def resolved(status: str) -> domain.Approval:
    """A pending approval taken to ``status`` by the verb that leads there."""
    verb, when = {
        "approved": ("approve", NOW),
        "rejected": ("reject", NOW),
        "cancelled": ("cancel", NOW),
        "expired": ("expire", DEADLINE),
        "responded": ("respond", NOW),
    }[status]
    approval = pending()
    after = domain.mutate(VERBS[verb](approval, when), approval)
    assert after.status == status
    return after


# -- terminal states are final ---------------------------------------------------------------


@pytest.mark.parametrize("verb", DECIDING)
@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
def test_a_terminal_approval_refuses_every_verb_before_and_after_the_deadline(
    status: str, verb: str
) -> None:
    approval = resolved(status)
    for when in (NOW, BEFORE, DEADLINE, DEADLINE + timedelta(days=1)):
        with pytest.raises(AlreadyDecided) as refused:
            VERBS[verb](approval, when)
        assert refused.value.code == "already_decided"
        assert refused.value.details["status"] == status


# -- the deadline ----------------------------------------------------------------------------


@pytest.mark.parametrize("verb", DECISIONS)
def test_a_decision_at_or_after_the_deadline_is_refused_as_expired(verb: str) -> None:
    approval = pending()
    assert isinstance(VERBS[verb](approval, BEFORE), events.Event)
    for when in (DEADLINE, DEADLINE + timedelta(seconds=1)):
        with pytest.raises(DeadlinePassed) as refused:
            VERBS[verb](approval, when)
        assert refused.value.code == "expired"
        assert approval.status == "pending"


def test_expire_before_the_deadline_is_a_conflict() -> None:
    with pytest.raises(Conflict) as refused:
        domain.expire(pending(), expire_cmd(), BEFORE)
    assert refused.value.code == "conflict"
    assert refused.value.details["expires_at"] == DEADLINE.isoformat()


@pytest.mark.parametrize("when", [DEADLINE, DEADLINE + timedelta(hours=5)])
def test_expire_at_or_after_the_deadline_expires(when: datetime) -> None:
    event = domain.expire(pending(), expire_cmd(), when)
    assert isinstance(event, events.Expired)
    assert event.occurred_at == when
    assert event.actor == "service:scheduler"


# -- who may approve -------------------------------------------------------------------------


@pytest.mark.parametrize("approver", ["service:billing", "policy:auto-approve"])
def test_only_a_person_can_approve(approver: str) -> None:
    with pytest.raises(Forbidden) as refused:
        domain.approve(pending(), approve_cmd(approver), NOW, WS)
    assert refused.value.code == "forbidden"


def test_the_requester_cannot_approve_their_own_request() -> None:
    approval = pending(requested_by="user:ana")
    with pytest.raises(Forbidden) as refused:
        domain.approve(approval, approve_cmd("user:ana"), NOW, WS)
    assert refused.value.code == "forbidden"


def test_the_person_a_request_acts_for_cannot_approve_it() -> None:
    with pytest.raises(Forbidden) as refused:
        domain.approve(pending(), approve_cmd(ON_BEHALF_OF), NOW, WS)
    assert refused.value.code == "forbidden"


def test_a_service_may_reject() -> None:
    event = domain.reject(pending(), reject_cmd("service:enricher"), NOW, WS)
    assert isinstance(event, events.Rejected)
    assert event.actor == "service:enricher"
    assert (event.reason, event.rerun) == ("no", True)


# -- an answer instead of a decision -----------------------------------------------------------


def test_an_answer_ends_the_request_with_its_message_for_the_requester() -> None:
    event = domain.respond(pending(), respond_cmd(), NOW, WS)
    assert isinstance(event, events.Responded)
    assert (event.actor, event.message, event.version) == (APPROVER, "which list?", 2)
    after = domain.mutate(event, pending())
    # Check: terminal, with the message where the requester reads a rejection's reason.
    assert (after.status, after.reason, after.decided_by) == ("responded", "which list?", APPROVER)
    assert after.is_terminal
    assert after.resolved_at == NOW


@pytest.mark.parametrize("approver", ["service:billing", REQUESTER, ON_BEHALF_OF, "user:ana"])
def test_only_whoever_may_approve_may_answer(approver: str) -> None:
    approval = pending(requested_by="user:ana") if approver == "user:ana" else pending()
    with pytest.raises(Forbidden) as refused:
        domain.respond(approval, respond_cmd(approver), NOW, WS)
    assert refused.value.code == "forbidden"


def test_an_answer_ends_a_quorum_whatever_votes_came_before() -> None:
    approval = pending(risk_level="high")
    approval = msgspec.structs.replace(approval, request=msgspec.structs.replace(
        approval.request, quorum=2))  # fmt: skip
    [vote] = domain.approve(approval, approve_cmd(), NOW, WS)
    voted = domain.mutate(vote, approval)
    event = domain.respond(voted, respond_cmd("user:dave"), NOW, WS)
    assert domain.mutate(event, voted).status == "responded"


def test_an_answered_request_is_never_redeemable() -> None:
    answered = domain.mutate(domain.respond(pending(), respond_cmd(), NOW, WS), pending())
    with pytest.raises(NotApproved) as refused:
        domain.redeem(answered, redeem_cmd(requested().digest), NOW)
    assert refused.value.code == "not_approved"
    assert refused.value.details == {"status": "responded", "reason": "which list?"}
    assert "answered" in refused.value.message


def test_approving_with_another_digest_is_a_digest_mismatch() -> None:
    with pytest.raises(DigestMismatch) as refused:
        domain.approve(pending(), approve_cmd(digest=OTHER_DIGEST), NOW, WS)
    assert refused.value.code == "digest_mismatch"
    assert refused.value.details == {"expected": requested().digest, "given": OTHER_DIGEST}


# -- idempotent requests ---------------------------------------------------------------------


def test_requesting_again_the_same_action_and_payload_is_accepted() -> None:
    assert domain.request_again(pending(), a_request(title="Another title")) is None


ACTION = a_request().action


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"proposed_payload": {"set": {"lifecycle": "customer"}}}, id="payload"),
        pytest.param({"action": msgspec.structs.replace(ACTION, max_credits=41.0)}, id="ceiling"),
        pytest.param({"action": msgspec.structs.replace(ACTION, destination="x")}, id="dest"),
        pytest.param(
            {"action": msgspec.structs.replace(ACTION, scope=commands.Scope(table="deals"))},
            id="scope",
        ),
    ],
)
def test_requesting_again_a_different_action_is_a_conflict(changes: dict[str, Any]) -> None:
    with pytest.raises(Conflict) as refused:
        domain.request_again(pending(), a_request(**changes))
    assert refused.value.code == "conflict"
    assert refused.value.details["existing_digest"] == requested().digest


# -- events and versions ---------------------------------------------------------------------


def test_a_request_becomes_a_requested_event_at_version_one() -> None:
    event = requested()
    assert (event.approval_id, event.version, event.workspace_id) == (APPROVAL_ID, 1, WORKSPACE)
    assert (event.actor, event.trace_id, event.occurred_at) == (REQUESTER, "trace-1", NOW)
    assert event.expires_at == DEADLINE
    assert event.digest == action_digest(ACTION, {"set": {"lifecycle": "lead"}})


def test_a_request_without_expiry_gets_the_default() -> None:
    event = domain.request(
        a_request(expires_in_s=None),
        approval_id=APPROVAL_ID,
        workspace_id=WORKSPACE,
        now=NOW,
        default_expiry_s=60,
    )
    assert event.expires_at == NOW + timedelta(seconds=60)


def test_each_decision_is_the_next_version_with_the_approvals_fields() -> None:
    # Check a delivery, then an approval, each one version on, stamped with now and the actor.
    approval = pending()
    later = NOW + timedelta(minutes=1)
    delivered = domain.deliver(approval, deliver_cmd(), later)
    approval = domain.mutate(delivered, approval)
    [approved] = domain.approve(approval, approve_cmd(), later + timedelta(minutes=1), WS)
    expected = [(2, "service:delivery", later), (3, APPROVER, later + timedelta(minutes=1))]
    for event, (version, actor, when) in zip([delivered, approved], expected, strict=True):
        assert (event.version, event.actor, event.occurred_at) == (version, actor, when)
        assert (event.approval_id, event.workspace_id) == (APPROVAL_ID, WORKSPACE)
        assert event.trace_id == "trace-1"
    assert approved.digest == requested().digest


def test_project_folds_a_history_into_the_final_state() -> None:
    # Check a request delivered twice then rejected projects to a rejected approval.
    history: list[events.Event] = [requested()]
    steps = [
        lambda a, t: domain.deliver(a, deliver_cmd(), t),
        lambda a, t: domain.deliver(
            a, commands.Deliver(approval_id=APPROVAL_ID, channel="email", target="ops@x"), t
        ),
        lambda a, t: domain.reject(a, reject_cmd(), t, WS),
    ]
    approval = domain.project(None, history)
    for minutes, step in enumerate(steps, start=1):
        assert approval is not None
        history.append(step(approval, NOW + timedelta(minutes=minutes)))
        approval = domain.mutate(history[-1], approval)
    folded = domain.project(None, history)
    assert folded == approval
    assert folded is not None
    assert (folded.status, folded.version) == ("rejected", 4)
    assert folded.resolved_at == folded.modified_at == NOW + timedelta(minutes=3)
    assert (folded.decided_by, folded.reason) == (APPROVER, "no")
    assert folded.deliveries == (
        Delivery(channel="slack", target="#ops"),
        Delivery(channel="email", target="ops@x"),
    )
    assert folded.request == history[0]


def test_project_continues_from_a_given_state_and_expire_keeps_no_reason() -> None:
    start = pending()
    expired = domain.expire(start, expire_cmd(), DEADLINE)
    folded = domain.project(start, [expired])
    assert folded is not None
    assert (folded.status, folded.decided_by, folded.reason) == (
        "expired",
        "service:scheduler",
        None,
    )
    assert domain.project(None, []) is None


def test_an_event_before_requested_cannot_be_projected() -> None:
    event = domain.expire(pending(), expire_cmd(), DEADLINE)
    with pytest.raises(TypeError):
        domain.project(None, [event])


# -- any sequence of commands ----------------------------------------------------------------

ACTORS = ["user:carol", "user:dave", REQUESTER, ON_BEHALF_OF, "service:x", "policy:y"]
RESOLVING = (events.Approved, events.Rejected, events.Expired, events.Cancelled, events.Responded)


def command_for(verb: str, actor: str, right_digest: bool) -> Callable[..., events.Event]:
    digest = requested().digest if right_digest else OTHER_DIGEST
    match verb:
        case "approve":
            cmd: commands.Command = approve_cmd(actor, digest)
            return lambda a, now: domain.approve(a, cmd, now, WS)[-1]
        case "reject":
            cmd = reject_cmd(actor)
            return lambda a, now: domain.reject(a, cmd, now, WS)
        case "cancel":
            cmd = cancel_cmd(actor)
            return lambda a, now: domain.cancel(a, cmd, now, WS)
        case "respond":
            cmd = respond_cmd(actor)
            return lambda a, now: domain.respond(a, cmd, now, WS)
        case "expire":
            cmd = expire_cmd(actor)
            return lambda a, now: domain.expire(a, cmd, now)
        case _:
            cmd = deliver_cmd(actor)
            return lambda a, now: domain.deliver(a, cmd, now)


steps = st.lists(
    st.tuples(
        st.sampled_from(sorted(VERBS)),
        st.sampled_from(ACTORS),
        st.integers(min_value=0, max_value=2 * EXPIRES_IN_S),
        st.booleans(),
    ),
    max_size=12,
)


@settings(deadline=None)
@given(steps)
def test_any_command_sequence_resolves_at_most_once(
    sequence: list[tuple[str, str, int, bool]],
) -> None:
    history: list[events.Event] = [requested()]
    approval = domain.mutate(history[0], None)
    statuses = [approval.status]
    refusals: list[tuple[str, str]] = []  # (code to expect, code given)
    for verb, actor, seconds, right_digest in sequence:
        now = NOW + timedelta(seconds=seconds)
        try:
            event = command_for(verb, actor, right_digest)(approval, now)
        except ApprovalError as refused:
            # Once resolved, every verb is already_decided; past the deadline, every verb but
            # expire is expired; other refusals (who, digest) are not this test's concern, nor
            # deliver's (it records a channel, whatever the state: a conflict, once per channel).
            if verb == "deliver":
                refusals.append(("conflict", refused.code))
            elif approval.is_terminal:
                refusals.append(("already_decided", refused.code))
            elif now >= DEADLINE and verb != "expire":
                refusals.append(("expired", refused.code))
            continue
        history.append(event)
        approval = domain.mutate(event, approval)
        statuses.append(approval.status)

    assert [expected for expected, _ in refusals] == [given for _, given in refusals]
    assert [e.version for e in history] == list(range(1, len(history) + 1))
    assert approval.version == len(history)
    assert sum(isinstance(e, RESOLVING) for e in history) <= 1
    changes = [s for before, s in pairwise(statuses) if s != before]
    assert changes in ([], [approval.status])
    assert approval.status in {"pending", *TERMINAL_STATUSES}
    if approval.is_terminal:
        decisions = [e for e in history if not isinstance(e, events.Delivered)]
        assert isinstance(decisions[-1], RESOLVING)
    assert domain.project(None, history) == approval


def test_a_channel_carries_a_request_once_and_a_failure_is_recorded() -> None:
    approval = pending()
    delivered = domain.deliver(approval, deliver_cmd(), NOW)
    approval = domain.mutate(delivered, approval)
    # Check: the same channel again is refused, naming the rule; another channel is not.
    with pytest.raises(Conflict) as again:
        domain.deliver(approval, deliver_cmd(), NOW)
    assert again.value.details["rule"] == "delivered_once"
    failing = commands.Deliver(approval_id=APPROVAL_ID, channel="webhook", target="https://x",
                               error="503 Service Unavailable", attempts=3)  # fmt: skip
    failed = domain.deliver(approval, failing, NOW)
    assert isinstance(failed, events.DeliveryFailed)
    assert (failed.channel, failed.error, failed.attempts, failed.version) == (
        "webhook", "503 Service Unavailable", 3, 3,
    )  # fmt: skip
    after = domain.mutate(failed, approval)
    assert (after.version, after.deliveries) == (3, approval.deliveries)


@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
def test_a_channel_that_took_the_request_is_recorded_after_the_decision(status: str) -> None:
    """A channel may finish taking the request after it was decided, or past its deadline: what
    it did is recorded all the same (so it is told the outcome), once, and decides nothing."""
    approval = resolved(status)
    for when in (NOW, DEADLINE + timedelta(days=1)):
        delivered = domain.deliver(approval, deliver_cmd(), when)
        assert isinstance(delivered, events.Delivered)
        assert (delivered.channel, delivered.version) == ("slack", approval.version + 1)
    after = domain.mutate(delivered, approval)
    assert (after.status, after.decided_by, after.resolved_at) == (
        status, approval.decided_by, approval.resolved_at,
    )  # fmt: skip
    assert [d.channel for d in after.deliveries] == ["slack"]
    # Check: still once per channel.
    with pytest.raises(Conflict) as again:
        domain.deliver(after, deliver_cmd(), NOW)
    assert again.value.details["rule"] == "delivered_once"


def test_reminders_come_when_due_and_escalation_lets_another_group_decide() -> None:
    from approvals.schemas.workspace import Reminders

    rules = Reminders(remind_after_s=60, repeat_every_s=600, escalate_after_s=1800,
                      escalate_to="leads")  # fmt: skip
    approval = pending()
    remind = commands.Remind(approval_id=APPROVAL_ID)
    # Check: not before it is due; then the first, and the next one only a repeat later.
    with pytest.raises(Conflict, match="no reminder is due"):
        domain.remind(approval, remind, NOW + timedelta(seconds=59), rules)
    first = domain.remind(approval, remind, NOW + timedelta(seconds=60), rules)
    approval = domain.mutate(first, approval)
    assert (first.count, approval.reminders) == (1, 1)
    with pytest.raises(Conflict, match="no reminder is due"):
        domain.remind(approval, remind, NOW + timedelta(seconds=600), rules)
    assert domain.remind(approval, remind, NOW + timedelta(seconds=660), rules).count == 2
    with pytest.raises(Conflict, match="no reminders"):
        domain.remind(approval, remind, NOW + timedelta(seconds=900), None)
    # Check: escalation once, when due.
    escalate = commands.Escalate(approval_id=APPROVAL_ID)
    with pytest.raises(Conflict, match="not due"):
        domain.escalate(approval, escalate, NOW + timedelta(seconds=1799), rules)
    escalated = domain.escalate(approval, escalate, NOW + timedelta(seconds=1800), rules)
    approval = domain.mutate(escalated, approval)
    assert approval.escalated_to == "leads"
    with pytest.raises(Conflict, match="already"):
        domain.escalate(approval, escalate, NOW + timedelta(seconds=1900), rules)
    # Check: nothing reminds after a decision.
    [approved] = domain.approve(approval, approve_cmd(), NOW + timedelta(seconds=2000), WS)
    decided = domain.mutate(approved, approval)
    with pytest.raises(AlreadyDecided):
        domain.remind(decided, remind, NOW + timedelta(seconds=2100), rules)


# -- groups name people by any of their names --------------------------------------------------

ALIASED_GROUPS = """
[members."user:admin"]
roles = ["admin"]
[members."user:erin"]
roles = ["approver"]
aliases = ["user:erin@example.com"]
[members."user:finn"]
roles = ["approver"]
aliases = ["user:slack.UFINN"]

[groups]
aliased = ["user:erin@example.com"]
night = ["user:slack.UFINN"]

[approvers]
high = ["aliased"]

[reminders]
remind_after_s = 60
escalate_after_s = 1800
escalate_to = "night"
"""


def test_a_group_that_names_a_member_by_an_alias_lets_that_member_decide() -> None:
    from approvals.schemas.workspace import parse_workspace
    from tests.workspaces import workspace as workspace_of

    settings = parse_workspace(ALIASED_GROUPS)
    ws = workspace_of(WORKSPACE, settings)
    # Check: erin is in the approver group by her alias, whichever name she signs with.
    for name in ("user:erin", "user:erin@example.com"):
        [approved] = domain.approve(pending(), approve_cmd(name), NOW, ws)
        assert isinstance(approved, events.Approved), name
    assert isinstance(domain.reject(pending(), reject_cmd("user:erin"), NOW, ws), events.Rejected)
    # Check: finn is not in it, until the request is escalated to the group naming his alias.
    with pytest.raises(Forbidden) as refused:
        domain.approve(pending(), approve_cmd("user:finn"), NOW, ws)
    assert refused.value.details["rule"] == "approvers:high"
    later = NOW + timedelta(seconds=1800)
    escalate = commands.Escalate(approval_id=APPROVAL_ID)
    escalated = domain.mutate(
        domain.escalate(pending(), escalate, later, settings.reminders), pending()
    )
    [approved] = domain.approve(escalated, approve_cmd("user:finn"), later, ws)
    assert isinstance(approved, events.Approved)


# -- redeeming: what differs, never the approved digest ----------------------------------------


def approved() -> domain.Approval:
    [event] = domain.approve(pending(), approve_cmd(), NOW, WS)
    return domain.mutate(event, pending())


def redeem_cmd(digest: str, **parts: Any) -> commands.Redeem:
    return commands.Redeem(approval_id=APPROVAL_ID, digest=digest, executor=REQUESTER, **parts)


def refused_redeem(cmd: commands.Redeem) -> DigestMismatch:
    with pytest.raises(DigestMismatch) as refused:
        domain.redeem(approved(), cmd, NOW)
    assert refused.value.code == "digest_mismatch"
    # The approved digest is never handed out: an executor could copy it instead of fixing
    # what it runs.
    details = dict(refused.value.details)
    assert details.pop("given") == cmd.digest  # only what the executor sent comes back
    assert requested().digest not in f"{refused.value.message} {details}"
    assert "expected" not in details
    return refused.value


WRONG_CEILING = msgspec.structs.replace(ACTION, max_credits=41.0)
OTHER_PAYLOAD = {"set": {"lifecycle": "customer"}}
APPROVED_PAYLOAD = a_request().proposed_payload


@pytest.mark.parametrize(
    ("action", "payload", "differs", "action_fields"),
    [
        pytest.param(WRONG_CEILING, APPROVED_PAYLOAD, ["action"], ["max_credits"], id="action"),
        pytest.param(ACTION, OTHER_PAYLOAD, ["proposed_payload"], None, id="payload"),
        pytest.param(
            msgspec.structs.replace(ACTION, destination="x", provider="y"), OTHER_PAYLOAD,
            ["action", "proposed_payload"], ["provider", "destination"], id="both",
        ),
    ],
)  # fmt: skip
def test_a_redeem_for_another_action_says_which_part_differs(
    action: commands.Action, payload: Any, differs: list[str], action_fields: list[str] | None
) -> None:
    given = action_digest(action, payload)
    error = refused_redeem(redeem_cmd(given, action=action, proposed_payload=payload))
    assert error.details["given"] == given
    assert error.details["differs"] == differs
    assert error.details.get("action_fields") == action_fields


def test_a_copied_digest_does_not_redeem_another_action() -> None:
    copied = requested().digest
    error = refused_redeem(redeem_cmd(copied, action=ACTION, proposed_payload=OTHER_PAYLOAD))
    assert error.details["differs"] == ["proposed_payload"]


def test_a_wrong_digest_for_the_approved_action_and_payload_is_refused_as_the_digest() -> None:
    error = refused_redeem(
        redeem_cmd(OTHER_DIGEST, action=ACTION, proposed_payload=APPROVED_PAYLOAD)
    )
    assert error.details["differs"] == ["digest"]


def test_a_redeem_with_only_a_wrong_digest_is_refused_without_the_approved_one() -> None:
    error = refused_redeem(redeem_cmd(OTHER_DIGEST))
    assert error.details["given"] == OTHER_DIGEST
    assert "proposed_payload" in error.message  # how to learn which part differs


def test_the_approved_action_redeems_with_or_without_its_parts() -> None:
    digest = requested().digest
    for cmd in (
        redeem_cmd(digest),
        redeem_cmd(digest, action=ACTION, proposed_payload=APPROVED_PAYLOAD),
    ):
        assert isinstance(domain.redeem(approved(), cmd, NOW), events.Redeemed)
