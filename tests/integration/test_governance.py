"""Who may decide, over a real nats-server on SQLite and PostgreSQL: every refusal names its rule,
quorum with veto, one person one vote, delegation, standing permissions, check, and the history
of a workspace's settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from approvals.client import ApprovalsClient
from approvals.schemas.codec import encoder, event_decoder
from approvals.schemas.events import WorkspaceConfigured
from approvals.schemas.workspace import Member, StandingPermission, WorkspaceSettings
from tests.helpers import assert_error, send
from tests.workspaces import approval_notifications

if TYPE_CHECKING:
    from approvals.services.approvals.service import CommandService
    from approvals.services.runtime.settings import Settings

    Started = tuple[CommandService, ApprovalsClient]

ADMIN = "user:admin"
GOV = WorkspaceSettings(
    members={
        ADMIN: Member(roles=("admin",)),
        "user:ana": Member(roles=("requester", "approver"), aliases=("user:ana@example.com",)),
        "user:bob": Member(roles=("approver",)),
        "user:carol": Member(roles=("approver",)),
        "user:dave": Member(roles=("requester", "approver")),
        "user:erin": Member(roles=("requester",)),
        "user:lead1": Member(roles=("approver",)),
        "user:lead2": Member(roles=("approver",)),
        "service:agent": Member(roles=("requester",)),
        "service:checker": Member(roles=("approver",)),
    },
    groups={"leads": ("user:lead1", "user:lead2")},
    quorum={"high": 2, "critical": 2},
    approvers={"critical": ("leads",)},
    bar_skill_owner=True,
    skill_owners={"crm-sync": "user:dave"},
    standing=(
        StandingPermission(
            name="small-enrichment",
            kinds=("provider_call",),
            providers=("clearbit",),
            risk_levels=("low",),
            max_credits_per_run=5,
            max_credits_per_day=12,
        ),
    ),
)
REQUEST: dict[str, Any] = {
    "requested_by": "service:agent",
    "skill_name": "outreach",
    "skill_execution_id": "exec-1",
    "title": "Enroll 12 leads in the Q4 sequence",
    "summary": "Writes 12 enrollments",
    "risk_level": "medium",
    "action": {"kind": "outbound_enrollment", "mode": "live", "destination": "outreach"},
}


@pytest.fixture
async def gov(command_service: Started) -> Started:
    """The command service with workspace ``gov`` set up by its admin, and a client of it."""
    service, acme = command_service
    client = ApprovalsClient(acme.nc, "gov", reply_timeout=10.0)
    reply = await send(client, "configure", {"settings": GOV, "by": ADMIN})
    assert (reply["ok"], reply["settings_version"]) == (True, 1), reply
    return service, client


async def ask(client: ApprovalsClient, **changes: Any) -> dict[str, Any]:
    reply = await send(client, "request", {**REQUEST, **changes})
    assert (reply["ok"], reply["outcome"]) == (True, "approval_required"), reply
    approval: dict[str, Any] = reply["approval"]
    return approval


def approve(approval: dict[str, Any], approver: str, **extra: Any) -> dict[str, Any]:
    return {"approval_id": approval["id"], "approver": approver, "digest": approval["digest"],
            **extra}  # fmt: skip


def history(service: CommandService, approval_id: str) -> list[Any]:
    assert service.app is not None
    return [
        event_decoder.decode(n.state)
        for n in approval_notifications(service.app)
        if str(n.originator_id) == approval_id
    ]


def assert_forbidden(reply: dict[str, Any], rule: str) -> None:
    assert_error(reply, "forbidden")
    assert reply["error"]["details"]["rule"] == rule, reply


# -- authorization: every refusal names its rule, and stores nothing ---------------------------

DECISIONS = [
    # (what is requested, who tries to approve, the rule that refuses)
    ({}, "user:zed", "member"),
    ({}, "user:erin", "role:approver"),
    ({}, "service:checker", "people_approve"),
    ({"risk_level": "critical"}, "user:bob", "approvers:critical"),
    ({"requested_by": "user:ana"}, "user:ana", "separation:requester"),
    ({"requested_by": "user:ana"}, "user:ana@example.com", "separation:requester"),
    ({"on_behalf_of": "user:bob"}, "user:bob", "separation:requester"),
    ({"skill_name": "crm-sync"}, "user:dave", "separation:skill_owner"),
]


@pytest.mark.parametrize(
    ("changes", "approver", "rule"), DECISIONS, ids=[rule for _, _, rule in DECISIONS]
)
async def test_an_approval_the_rules_forbid_is_refused_naming_the_rule(
    gov: Started, changes: dict[str, Any], approver: str, rule: str
) -> None:
    service, client = gov
    approval = await ask(client, **changes)
    reply = await send(client, "approve", approve(approval, approver))
    assert_forbidden(reply, rule)
    assert [e.event_type for e in history(service, approval["id"])] == ["requested"]


async def test_who_may_request_cancel_and_administer(gov: Started) -> None:
    service, client = gov
    # Check: a member without the requester role cannot ask; a stranger cannot either.
    assert_forbidden(
        await send(client, "request", {**REQUEST, "requested_by": "user:bob"}), "role:requester"
    )
    assert_forbidden(
        await send(client, "request", {**REQUEST, "requested_by": "service:stranger"}), "member"
    )
    assert_forbidden(
        await send(client, "request", {**REQUEST, "on_behalf_of": "user:stranger"}),
        "on_behalf_of_member",
    )
    # Check: only the requester, the person it acts for, or an admin cancels.
    approval = await ask(client)
    by_carol = {"approval_id": approval["id"], "by": "user:carol"}
    assert_forbidden(await send(client, "cancel", by_carol), "cancel")
    by_admin = {"approval_id": approval["id"], "by": ADMIN}
    assert (await send(client, "cancel", by_admin))["outcome"] == "cancelled"
    # Check: only an admin changes the settings.
    changed = msgspec.structs.replace(GOV, quorum={"high": 3})
    assert_forbidden(await send(client, "configure", {"settings": changed, "by": "user:ana"}),
                     "role:admin")  # fmt: skip
    assert service.app is not None
    workspace = service.app.workspace("gov")
    assert workspace is not None
    assert workspace.version == 1


async def test_a_workspace_that_does_not_exist_refuses_every_request(gov: Started) -> None:
    service, client = gov
    nowhere = ApprovalsClient(client.nc, "nowhere")
    reply = await send(nowhere, "request", REQUEST)
    assert_error(reply, "not_found")
    assert reply["error"]["details"] == {"workspace": "nowhere", "kind": "workspace"}
    # Check: its creator must be one of its admins.
    reply = await send(nowhere, "configure", {"settings": GOV, "by": "user:ana"})
    assert_forbidden(reply, "creator_is_admin")
    assert service.app is not None
    assert service.app.workspace("nowhere") is None


# -- quorum, veto, one person one vote -------------------------------------------------------


async def test_a_high_risk_request_needs_two_people_and_each_vote_is_an_event(
    gov: Started,
) -> None:
    service, client = gov
    approval = await ask(client, risk_level="high")
    assert (approval["quorum"], approval["votes"]) == (2, [])
    first = await send(client, "approve", approve(approval, "user:ana", reason="looks right"))
    assert (first["outcome"], first["approval"]["status"]) == ("vote_cast", "pending")
    assert first["approval"]["votes"] == ["user:ana"]
    # Check: the same person under another name, or twice, counts once.
    for name in ("user:ana", "user:ana@example.com"):
        again = await send(client, "approve", approve(approval, name))
        assert_error(again, "conflict")
        assert again["error"]["details"]["rule"] == "one_vote_per_person"
    second = await send(client, "approve", approve(approval, "user:bob"))
    assert (second["outcome"], second["approval"]["status"]) == ("approved", "approved")
    assert second["approval"]["votes"] == ["user:ana", "user:bob"]
    events = history(service, approval["id"])
    assert [e.event_type for e in events] == ["requested", "vote_cast", "approved"]
    vote, approved = events[1], events[2]
    assert (vote.voter, vote.digest, vote.reason) == ("user:ana", approval["digest"], "looks right")
    assert (approved.actor, approved.votes) == ("user:bob", ("user:ana", "user:bob"))


async def test_one_rejection_rejects_whatever_votes_came_before(gov: Started) -> None:
    service, client = gov
    approval = await ask(client, risk_level="high")
    await send(client, "approve", approve(approval, "user:ana"))
    body = {"approval_id": approval["id"], "approver": "user:carol", "reason": "wrong list"}
    vetoed = await send(client, "reject", body)
    assert (vetoed["outcome"], vetoed["approval"]["status"]) == ("rejected", "rejected")
    late = await send(client, "approve", approve(approval, "user:bob"))
    assert_error(late, "already_decided")
    assert [e.event_type for e in history(service, approval["id"])] == [
        "requested", "vote_cast", "rejected",
    ]  # fmt: skip


async def test_a_critical_request_is_decided_by_its_group_only(gov: Started) -> None:
    _, client = gov
    approval = await ask(client, risk_level="critical")
    await send(client, "approve", approve(approval, "user:lead1"))
    done = await send(client, "approve", approve(approval, "user:lead2"))
    assert done["approval"]["status"] == "approved"


# -- delegation ------------------------------------------------------------------------------


async def delegate(client: ApprovalsClient, by: str, to: str, days: float) -> dict[str, Any]:
    ends_at = datetime.now(UTC) + timedelta(days=days)
    return await send(client, "delegate", {"by": by, "to": to, "ends_at": ends_at})


async def test_a_delegate_decides_in_the_members_place_and_both_are_recorded(
    gov: Started,
) -> None:
    service, client = gov
    approval = await ask(client, risk_level="critical")
    # Check: carol is not in the leads group, but lead1's delegation lets her vote for lead1.
    assert_forbidden(await send(client, "approve", approve(approval, "user:carol")),
                     "approvers:critical")  # fmt: skip
    assert_forbidden(
        await send(client, "approve", approve(approval, "user:carol", for_member="user:lead1")),
        "delegation",
    )
    assert (await delegate(client, "user:lead1", "user:carol", 7))["outcome"] == "delegated"
    vote = await send(client, "approve", approve(approval, "user:carol", for_member="user:lead1"))
    assert (vote["outcome"], vote["approval"]["votes"]) == ("vote_cast", ["user:lead1"])
    # Check: lead1 in person cannot add a second vote of their own.
    twice = await send(client, "approve", approve(approval, "user:lead1"))
    assert twice["error"]["details"]["rule"] == "one_vote_per_person"
    done = await send(client, "approve", approve(approval, "user:lead2"))
    assert done["approval"]["status"] == "approved"
    cast = history(service, approval["id"])[1]
    assert (cast.voter, cast.for_member, cast.signed_as) == ("user:carol", "user:lead1",
                                                              "user:carol")  # fmt: skip


async def test_a_delegate_never_approves_their_own_request_and_an_ended_delegation_ends(
    gov: Started,
) -> None:
    _, client = gov
    await delegate(client, "user:bob", "user:dave", 7)
    own = await ask(client, requested_by="user:dave")
    refused = await send(client, "approve", approve(own, "user:dave", for_member="user:bob"))
    assert_forbidden(refused, "separation:requester")
    # Check: a delegation that ended refuses, and the settings no longer show it.
    other = await ask(client)
    await delegate(client, "user:bob", "user:dave", -1)
    ended = await send(client, "approve", approve(other, "user:dave", for_member="user:bob"))
    assert_forbidden(ended, "delegation")
    shown = msgspec.json.decode(
        (await client.nc.request("approvals.query.gov.workspace", b"{}")).data
    )
    assert shown["workspace"]["delegations"] == []


# -- standing permissions and check ----------------------------------------------------------

SMALL_ENRICHMENT: dict[str, Any] = {
    **REQUEST,
    "risk_level": "low",
    "action": {"kind": "provider_call", "mode": "live", "provider": "clearbit", "max_credits": 5},
}


async def test_a_standing_permission_approves_bounded_work_up_to_its_daily_allowance(
    gov: Started,
) -> None:
    service, client = gov
    outcomes = []
    for i in range(3):
        reply = await send(client, "request", {**SMALL_ENRICHMENT, "skill_execution_id": f"e{i}"})
        outcomes.append((reply["outcome"], reply["policy"]["standing_rule"]))
    # Check: 5 + 5 fit the 12 credits a day; the third would take it to 15 and waits for a person.
    assert outcomes == [
        ("approved", "small-enrichment"),
        ("approved", "small-enrichment"),
        ("approval_required", None),
    ]
    approved = [
        e for e in map(event_decoder.decode, (n.state for n in approval_notifications(service.app)))
        if e.event_type == "approved"
    ] if service.app else []  # fmt: skip
    assert [e.actor for e in approved] == ["policy:small-enrichment"] * 2
    # Check: more than the rule's per-run bound is never covered by it.
    big = {**SMALL_ENRICHMENT, "action": {**SMALL_ENRICHMENT["action"], "max_credits": 6}}
    reply = await send(client, "request", {**big, "skill_execution_id": "big"})
    assert (reply["outcome"], reply["policy"]["standing_rule"]) == ("approval_required", None)


@pytest.mark.parametrize(
    ("action", "outcome", "row"),
    [
        ({"kind": "crm_write", "mode": "live"}, "approval_required", "external_write"),
        ({"kind": "crm_write", "mode": "dry_run"}, "not_required", "not_live"),
        ({"kind": "read", "mode": "live"}, "not_required", "read"),
    ],
)
async def test_check_answers_why_and_stores_nothing(
    gov: Started, action: dict[str, Any], outcome: str, row: str
) -> None:
    service, client = gov
    assert service.app is not None
    before = service.app.last_notification_id()
    reply = await send(client, "check", {**REQUEST, "action": action})
    assert (reply["outcome"], reply["approval"], reply["policy"]["row"]) == (outcome, None, row)
    assert reply["policy"]["reason"]
    assert service.app.last_notification_id() == before


# -- the settings' own history ---------------------------------------------------------------


async def test_a_settings_change_is_recorded_with_who_and_what_changed(gov: Started) -> None:
    service, client = gov
    changed = msgspec.structs.replace(GOV, quorum={"high": 3, "critical": 2})
    reply = await send(client, "configure", {"settings": changed, "by": ADMIN})
    assert (reply["outcome"], reply["settings_version"]) == ("configured", 2)
    assert reply["changes"] == [{"path": "quorum.high", "before": 2, "after": 3}]
    # Check: applying the same settings again records nothing.
    same = await send(client, "configure", {"settings": changed, "by": ADMIN})
    assert (same["settings_version"], same["changes"]) == (2, [])
    # Check: settings that point at nothing are refused before anything is stored.
    broken = msgspec.structs.replace(GOV, approvers={"high": ("nobody",)})
    assert_error(await send(client, "configure", {"settings": broken, "by": ADMIN}), "invalid")
    assert service.app is not None
    configured = [
        e for n in service.app.notifications(1, 1_000)
        if isinstance(e := event_decoder.decode(n.state), WorkspaceConfigured)
        and e.workspace_id == "gov"
    ]  # fmt: skip
    assert [(e.version, e.actor) for e in configured] == [(1, ADMIN), (2, ADMIN)]
    assert [(c.path, c.before, c.after) for c in configured[1].changes] == [("quorum.high", 2, 3)]
    # Check: a request made now needs three approvals.
    assert (await ask(client, risk_level="high"))["quorum"] == 3


async def test_the_stored_settings_never_hold_a_secret(gov: Started, settings: Settings) -> None:
    _, client = gov
    with_channel = msgspec.convert(
        {**msgspec.to_builtins(GOV), "channels": {"high": ["slack"]},
         "channel": {"slack": {"secret": "SLACK_BOT_TOKEN", "target": "C01"}}},
        WorkspaceSettings,
    )  # fmt: skip
    reply = await send(client, "configure", {"settings": with_channel, "by": ADMIN})
    assert reply["ok"], reply
    # Check: a value where a secret's name belongs is refused.
    leaked = msgspec.to_builtins(with_channel)
    leaked["channel"]["slack"]["secret"] = "xoxb-123-abc"
    raw = encoder.encode({"settings": leaked, "by": ADMIN})
    assert_error(await send(client, "configure", raw), "invalid")


async def test_check_says_when_a_standing_permission_would_approve_at_once(gov: Started) -> None:
    service, client = gov
    assert service.app is not None
    before = service.app.last_notification_id()
    # Check: covered by the rule, within its day's allowance: approved at once, naming it.
    reply = await send(client, "check", SMALL_ENRICHMENT)
    assert (reply["outcome"], reply["approval"], reply["policy"]["standing_rule"]) == (
        "approved_at_once", None, "small-enrichment",
    )  # fmt: skip
    assert service.app.last_notification_id() == before  # a check stores nothing
    # Check: once the day's allowance cannot take it, a person decides, and check says so.
    for i in range(2):
        asked = await send(client, "request", {**SMALL_ENRICHMENT, "skill_execution_id": f"c{i}"})
        assert asked["outcome"] == "approved"
    reply = await send(client, "check", SMALL_ENRICHMENT)
    assert (reply["outcome"], reply["policy"]["standing_rule"]) == ("approval_required", None)
    # Check: what no rule covers still needs approval, as before.
    big = {**SMALL_ENRICHMENT, "action": {**SMALL_ENRICHMENT["action"], "max_credits": 6}}
    reply = await send(client, "check", big)
    assert (reply["outcome"], reply["policy"]["standing_rule"]) == ("approval_required", None)
