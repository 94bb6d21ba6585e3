"""Passkey-signed decisions in the command service, on SQLite and PostgreSQL: members register
passkeys (checked by the ``webauthn`` library), a workspace requiring them for high risk takes
only a decision signed by the deciding member's registered credential over exactly this
decision, and every other assertion is refused with its reason and nothing stored. The
assertions are real: ES256 signatures of a software authenticator (tests/authenticator.py).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from approvals.schemas import commands
from approvals.schemas.passkeys import Statement, b64
from approvals.schemas.workspace import Member, Passkeys, WorkspaceSettings
from approvals.services.approvals.application import Approvals
from approvals.services.approvals.errors import ApprovalError
from approvals.services.audit.passkeys import LogAudit, check_receipt
from tests.authenticator import ORIGIN, RP_ID, Authenticator

if TYPE_CHECKING:
    from collections.abc import Iterator
    from uuid import UUID

    from approvals.schemas.passkeys import RegisteredPasskey
    from approvals.services.approvals.domain import Approval

WS = "keys"
ADMIN = "user:admin"
SETTINGS = WorkspaceSettings(
    members={
        ADMIN: Member(roles=("admin",)),
        "user:ana": Member(roles=("approver",)),
        "user:bob": Member(roles=("approver",)),
        "user:carol": Member(roles=("approver",)),
        "service:agent": Member(roles=("requester",)),
    },
    quorum={"critical": 2},
    passkeys=Passkeys(require=("high", "critical")),
)
ACTION = commands.Action(kind="crm_write", mode="live", destination="hubspot", max_credits=30,
                         scope=commands.Scope(table="leads", row_ids=("r1", "r2", "r3"),
                                              row_count=3))  # fmt: skip


@pytest.fixture
def app(store_environment: dict[str, str]) -> Iterator[Approvals]:
    application = Approvals(store_environment)
    application.handle(WS, commands.Configure(settings=SETTINGS, by=ADMIN))
    yield application
    application.close()


def register(app: Approvals, member: str, device: Authenticator | None = None) -> Authenticator:
    device = device or Authenticator()
    challenge = os.urandom(32)
    app.handle(WS, commands.RegisterPasskey(
        member=member, credential=device.register(challenge), challenge=b64(challenge),
        rp_id=RP_ID, origin=ORIGIN, session="test",
    ))  # fmt: skip
    return device


def ask(app: Approvals, risk: str = "high") -> Approval:
    result = app.handle(WS, commands.Request(
        requested_by="service:agent", skill_name="crm", skill_execution_id="e1",
        title="Write 3 leads", summary="to HubSpot", risk_level=risk,  # type: ignore[arg-type]
        action=ACTION,
    ))  # fmt: skip
    assert result.approval is not None
    return result.approval


def statement(approval: Approval, member: str, decision: str = "approve",
              digest: str | None = None, version: int | None = None) -> Statement:  # fmt: skip
    return Statement(
        workspace_id=WS, approval_id=approval.id, decision=decision,  # type: ignore[arg-type]
        version=approval.version if version is None else version,
        digest=digest or approval.current.digest, approver=member,
    )  # fmt: skip


def approve(app: Approvals, approval: Approval, member: str, passkey: Any = None,
            **fields: Any) -> Any:  # fmt: skip
    return app.handle(WS, commands.Approve(
        approval_id=approval.id, approver=member, digest=approval.current.digest,
        passkey=passkey, **fields,
    ))  # fmt: skip


def refused(app: Approvals, approval_id: UUID, code: str, reason: str | None, call: Any) -> None:
    """``call`` is refused with ``code`` (and ``details.reason``), and nothing is stored."""
    before = app.last_notification_id()
    with pytest.raises(ApprovalError) as caught:
        call()
    assert caught.value.code == code, caught.value.message
    if reason is not None:
        assert caught.value.details.get("reason") == reason, caught.value.message
    assert app.last_notification_id() == before
    assert app.get(approval_id).status == "pending"


def test_a_registered_passkey_signs_an_approval_and_its_use_is_recorded(app: Approvals) -> None:
    # Check: the registration is an event of the workspace, with its public key and session
    device = register(app, "user:ana")
    stored = [msgspec.json.decode(n.state) for n in app.notifications(1, 1000)]
    registered = [e for e in stored if e["type"] == "passkey_registered"]
    assert len(registered) == 1
    assert (registered[0]["member"], registered[0]["credential_id"]) == (
        "user:ana",
        device.credential_id,
    )
    assert (registered[0]["algorithm"], registered[0]["session"]) == (-7, "test")
    # Check: the signed approval is recorded, the assertion in the approved event and receipt
    approval = ask(app)
    result = approve(app, approval, "user:ana", device.sign(statement(approval, "user:ana")))
    assert result.outcome == "approved"
    assert result.approval.receipt is not None
    assert [s.member for s in result.approval.receipt.passkeys] == ["user:ana"]
    assert result.approval.receipt.receipt_version == 3
    kinds = [msgspec.json.decode(n.state)["type"] for n in app.notifications(1, 1000)]
    assert kinds[-2:] == ["approved", "passkey_used"]


def test_a_quorum_carries_every_approvers_assertion(app: Approvals) -> None:
    ana, bob = register(app, "user:ana"), register(app, "user:bob")
    approval = ask(app, "critical")
    # Check: the first vote carries ana's assertion, the approving vote bob's and ana's
    vote = approve(app, approval, "user:ana", ana.sign(statement(approval, "user:ana")))
    assert vote.outcome == "vote_cast"
    approval = app.get(approval.id)
    done = approve(app, approval, "user:bob", bob.sign(statement(approval, "user:bob")))
    assert done.outcome == "approved"
    signed = done.approval.receipt.passkeys
    assert [(s.member, s.version) for s in signed] == [("user:ana", 1), ("user:bob", 2)]


def test_a_signed_rejection(app: Approvals) -> None:
    ana = register(app, "user:ana")
    approval = ask(app)
    # Check: a rejection without a passkey is refused; with ana's signature of it, recorded
    refused(app, approval.id, "passkey_required", None, lambda: app.handle(WS, commands.Reject(
        approval_id=approval.id, approver="user:ana")))  # fmt: skip
    signed = ana.sign(statement(approval, "user:ana", "reject"))
    result = app.handle(WS, commands.Reject(approval_id=approval.id, approver="user:ana",
                                            passkey=signed))  # fmt: skip
    assert result.outcome == "rejected"


def test_assertions_that_do_not_sign_this_decision_are_refused(app: Approvals) -> None:
    ana, bob = register(app, "user:ana"), register(app, "user:bob")
    other = ask(app)
    approval = ask(app)
    cases: list[tuple[str, str, Any]] = [
        ("passkey_required", "", None),
        ("passkey_invalid", "other_approval", ana.sign(statement(other, "user:ana"))),
        (
            "passkey_invalid",
            "other_version",
            ana.sign(statement(approval, "user:ana", version=approval.version + 1)),
        ),
        (
            "passkey_invalid",
            "other_digest",
            ana.sign(statement(approval, "user:ana", digest="0" * 64)),
        ),
        ("passkey_invalid", "other_decision", ana.sign(statement(approval, "user:ana", "reject"))),
        # bob's own credential, signing a statement naming ana: not ana's credential
        ("passkey_invalid", "other_member", bob.sign(statement(approval, "user:ana"))),
        # bob's credential over bob's statement, sent as ana's vote
        ("passkey_invalid", "other_member", bob.sign(statement(approval, "user:bob"))),
        (
            "passkey_invalid",
            "user_not_verified",
            ana.sign(statement(approval, "user:ana"), verified=False),
        ),
        (
            "passkey_invalid",
            "origin_mismatch",
            ana.sign(statement(approval, "user:ana"), origin="https://evil.test"),
        ),
        (
            "passkey_invalid",
            "unknown_credential",
            Authenticator().sign(statement(approval, "user:ana")),
        ),
    ]
    for code, reason, passkey in cases:
        refused(app, approval.id, code, reason or None,
                lambda p=passkey: approve(app, approval, "user:ana", p))  # fmt: skip
    # Check: a forged signature (the right statement, another key's signature) is refused
    good = ana.sign(statement(approval, "user:ana"))
    forged = msgspec.structs.replace(good, signature=Authenticator().sign(
        statement(approval, "user:ana")).signature)  # fmt: skip
    refused(app, approval.id, "passkey_invalid", "signature_invalid",
            lambda: approve(app, approval, "user:ana", forged))  # fmt: skip
    # Check: after all that, the right one is taken
    assert approve(app, approval, "user:ana", good).outcome == "approved"


def test_an_edit_after_the_ceremony_started_invalidates_it(app: Approvals) -> None:
    ana, bob = register(app, "user:ana"), register(app, "user:bob")
    approval = ask(app, "critical")
    signed_early = bob.sign(statement(approval, "user:bob"))
    # Check: ana's signed vote for an edited version moves the approval on
    edits = commands.Edits(scope=commands.Scope(row_ids=("r1",), row_count=1), max_credits=10)
    from approvals.schemas.digest import action_digest

    edited = msgspec.structs.replace(ACTION, max_credits=10, scope=commands.Scope(
        table="leads", row_ids=("r1",), row_count=1))  # fmt: skip
    digest = action_digest(edited, None)
    vote = approve(
        app,
        approval,
        "user:ana",
        ana.sign(statement(approval, "user:ana", digest=digest)),
        edits=edits,
    )
    assert vote.outcome == "vote_cast", vote
    now = app.get(approval.id)
    # Check: bob's assertion, made over the request before the edit, is refused
    refused(app, approval.id, "passkey_invalid", "other_digest", lambda: app.handle(
        WS, commands.Approve(approval_id=approval.id, approver="user:bob", digest=digest,
                             passkey=signed_early)))  # fmt: skip
    result = app.handle(WS, commands.Approve(
        approval_id=approval.id, approver="user:bob", digest=digest,
        passkey=bob.sign(statement(now, "user:bob", digest=digest))))  # fmt: skip
    assert result.outcome == "approved"


def test_a_removed_credential_and_a_replayed_assertion_are_refused(app: Approvals) -> None:
    ana, bob = register(app, "user:ana"), register(app, "user:bob")
    # Check: bob removes his passkey; it signs nothing any more
    app.handle(WS, commands.RemovePasskey(credential_id=bob.credential_id, by="user:bob"))
    approval = ask(app)
    refused(
        app,
        approval.id,
        "passkey_invalid",
        "credential_removed",
        lambda: approve(app, approval, "user:bob", bob.sign(statement(approval, "user:bob"))),
    )
    # Check: an assertion whose counter does not move past the last use is a replay
    first = ask(app)
    assert (
        approve(app, first, "user:ana", ana.sign(statement(first, "user:ana"))).outcome
        == "approved"
    )
    again = ana.sign(statement(approval, "user:ana"), count=ana.sign_count)
    refused(
        app,
        approval.id,
        "passkey_invalid",
        "replayed",
        lambda: approve(app, approval, "user:ana", again),
    )
    # Check: only its member or an admin removes a passkey
    with pytest.raises(ApprovalError) as caught:
        app.handle(WS, commands.RemovePasskey(credential_id=ana.credential_id, by="user:carol"))
    assert caught.value.code == "forbidden"


def test_registration_is_checked(app: Approvals) -> None:
    device = Authenticator()
    challenge = os.urandom(32)
    credential = device.register(challenge)
    # Check: a registration over another challenge, or by a non-member, is refused
    with pytest.raises(ApprovalError) as caught:
        app.handle(WS, commands.RegisterPasskey(
            member="user:ana", credential=credential, challenge=b64(os.urandom(32)),
            rp_id=RP_ID, origin=ORIGIN))  # fmt: skip
    assert (caught.value.code, caught.value.details["reason"]) == (
        "passkey_invalid",
        "registration_invalid",
    )
    with pytest.raises(ApprovalError) as caught:
        app.handle(WS, commands.RegisterPasskey(
            member="user:zed", credential=credential, challenge=b64(challenge),
            rp_id=RP_ID, origin=ORIGIN))  # fmt: skip
    assert caught.value.code == "forbidden"
    # Check: registered once; the same credential again is a conflict
    register(app, "user:ana", device)
    with pytest.raises(ApprovalError) as caught:
        register(app, "user:bob", device)
    assert caught.value.code == "conflict"


def test_low_risk_and_workspaces_without_passkeys_work_as_before(app: Approvals) -> None:
    # Check: a medium-risk request here, and a high-risk one elsewhere, need no passkey
    approval = ask(app, "medium")
    assert approve(app, approval, "user:ana").outcome == "approved"
    plain = msgspec.structs.replace(SETTINGS, passkeys=None)
    app.handle("plain", commands.Configure(settings=plain, by=ADMIN))
    result = app.handle("plain", commands.Request(
        requested_by="service:agent", skill_name="crm", skill_execution_id="e1",
        title="Write", summary="s", risk_level="high", action=ACTION))  # fmt: skip
    assert result.approval is not None
    done = app.handle(
        "plain",
        commands.Approve(
            approval_id=result.approval.id,
            approver="user:ana",
            digest=result.approval.request.digest,
        ),
    )
    assert done.outcome == "approved"
    assert done.approval.receipt.receipt_version == 2


def test_a_delivery_during_the_ceremony_changes_nothing_a_vote_does(app: Approvals) -> None:
    ana, bob = register(app, "user:ana"), register(app, "user:bob")
    approval = ask(app, "critical")
    # Check: signed at version 1; a delivery (version 2) changes nothing ana decides on
    early = ana.sign(statement(approval, "user:ana"))
    app.handle(WS, commands.Deliver(approval_id=approval.id, channel="inbox", target="inbox"))
    assert app.get(approval.id).version == 2
    assert approve(app, approval, "user:ana", early).outcome == "vote_cast"
    # Check: a signature over a version before ana's vote no longer signs bob's decision
    stale = bob.sign(statement(approval, "user:bob", version=2))
    refused(app, approval.id, "passkey_invalid", "other_version",
            lambda: approve(app, approval, "user:bob", stale))  # fmt: skip
    # Check: nor does ana's assertion, sent again as bob's
    refused(app, approval.id, "passkey_invalid", "other_member",
            lambda: approve(app, approval, "user:bob", early))  # fmt: skip


def export_of(app: Approvals) -> list[RegisteredPasskey]:
    """The registered credentials as `approvals passkeys export` writes them."""
    audit = LogAudit()
    for notification in app.notifications(1, 10_000):
        audit.feed(msgspec.json.decode(notification.state))
    return list(audit.keys.values())


def test_a_receipt_verifies_offline_and_a_moved_assertion_fails_by_name(app: Approvals) -> None:
    ana, bob = register(app, "user:ana"), register(app, "user:bob")
    first, second = ask(app), ask(app)
    one = approve(app, first, "user:ana", ana.sign(statement(first, "user:ana"))).approval
    two = approve(app, second, "user:bob", bob.sign(statement(second, "user:bob"))).approval
    keys = export_of(app)
    # Check: each receipt's assertion holds against the export of registered credentials
    assert [c.reason for c in check_receipt(one.receipt, keys)] == [None]
    assert [c.reason for c in check_receipt(two.receipt, keys)] == [None]
    # Check: ana's assertion moved onto bob's approval, onto another digest, or claimed by
    # another member, each fails with its reason
    moved = msgspec.structs.replace(two.receipt, passkeys=one.receipt.passkeys,
                                    approvers=("user:ana",))  # fmt: skip
    assert [c.reason for c in check_receipt(moved, keys)] == ["other_approval"]
    other_digest = msgspec.structs.replace(one.receipt, digest="0" * 64)
    assert [c.reason for c in check_receipt(other_digest, keys)] == ["other_digest"]
    as_bob = msgspec.structs.replace(one.receipt, approvers=("user:bob",), passkeys=(
        msgspec.structs.replace(one.receipt.passkeys[0], member="user:bob"),))  # fmt: skip
    assert [c.reason for c in check_receipt(as_bob, keys)] == ["other_member"]
    # Check: an approver without an assertion, and a credential nobody registered, fail too
    unsigned = msgspec.structs.replace(one.receipt, approvers=("user:ana", "user:carol"))
    assert [c.reason for c in check_receipt(unsigned, keys)] == [None, "unsigned_approver"]
    assert [c.reason for c in check_receipt(one.receipt, [])] == ["unknown_credential"]
    # Check: a credential registered after the decision does not vouch for it
    late = [msgspec.structs.replace(k, registered_at=one.receipt.approved_at + timedelta(
        seconds=1)) for k in keys]  # fmt: skip
    assert [c.reason for c in check_receipt(one.receipt, late)] == ["registered_after"]


def test_the_audit_checks_every_signed_decision_in_the_log(app: Approvals) -> None:
    ana, bob = register(app, "user:ana"), register(app, "user:bob")
    approval = ask(app, "critical")
    approve(app, approval, "user:ana", ana.sign(statement(approval, "user:ana")))
    now = app.get(approval.id)
    approve(app, now, "user:bob", bob.sign(statement(now, "user:bob")))
    rejected = ask(app)
    app.handle(
        WS,
        commands.Reject(
            approval_id=rejected.id,
            approver="user:ana",
            passkey=ana.sign(statement(rejected, "user:ana", "reject")),
        ),
    )
    stored = [msgspec.json.decode(n.state) for n in app.notifications(1, 10_000)]
    # Check: the log as stored checks out: three signed decisions
    audit = LogAudit()
    assert [audit.feed(raw) for raw in stored] == [None] * len(stored)
    assert audit.checked == 3
    # Check: bob's assertion moved onto the rejection is named
    signed = next(e for e in stored if e["type"] == "approved")["passkey"]
    forged = [{**e, "passkey": {**signed, "decision": "reject"}} if e["type"] == "rejected"
              else e for e in stored]  # fmt: skip
    audit = LogAudit()
    failures = [f for raw in forged if (f := audit.feed(raw)) is not None]
    assert [(f.member, f.reason) for f in failures] == [("user:bob", "other_approval")]
