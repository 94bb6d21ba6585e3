"""The command service through a real nats-server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import msgspec
import pytest
from nats.js.errors import NotFoundError

from approvals.client import ApprovalsClient
from approvals.schemas import commands, subjects
from approvals.schemas.codec import encoder, event_decoder
from approvals.schemas.digest import action_digest
from approvals.schemas.events import Rejected
from approvals.services.approvals.application import Approvals
from approvals.services.approvals.store import store_env
from tests.helpers import assert_error, eventually, send
from tests.workspaces import approval_notifications

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

    from eventsourcing.persistence import Notification
    from nats.js.api import RawStreamMsg

    from approvals.services.approvals.service import CommandService
    from approvals.services.runtime.settings import Settings

    Started = tuple[CommandService, ApprovalsClient]

ACTION = {"kind": "crm_write", "mode": "live", "max_credits": 40}
REQUEST: dict[str, Any] = {
    "requested_by": "service:enricher",
    "skill_name": "crm-sync",
    "skill_execution_id": "exec-1",
    "title": "Sync 40 contacts to HubSpot",
    "summary": "Writes 40 contacts",
    "risk_level": "high",
    "action": ACTION,
}


async def request(client: ApprovalsClient, **changes: Any) -> dict[str, Any]:
    reply = await send(client, "request", {**REQUEST, **changes})
    assert reply["ok"] is True, reply
    assert reply["outcome"] == "approval_required"
    approval: dict[str, Any] = reply["approval"]
    return approval


def approve_body(approval: dict[str, Any], approver: str = "user:ana") -> dict[str, Any]:
    return {"approval_id": approval["id"], "approver": approver, "digest": approval["digest"]}


def stored(service: CommandService) -> int:
    """How many approval events are stored: unchanged when a command stored nothing."""
    return len(notifications(service))


def notifications(service: CommandService) -> list[Notification]:
    """Every stored approval event (the workspaces' settings set up by the fixture left out;
    PostgreSQL ids may have gaps after a rolled-back save)."""
    assert service.app is not None
    return approval_notifications(service.app)


# -- requests and decisions -----------------------------------------------------------------


async def test_a_request_needs_approval_and_the_reply_shows_it(
    command_service: Started, command_settings: Settings
) -> None:
    service, client = command_service
    reply = await send(client, "request", {**REQUEST, "proposed_payload": {"rows": [1, 2]}})
    assert (reply["ok"], reply["outcome"], reply["replayed"]) == (True, "approval_required", False)
    approval = reply["approval"]
    approval_id = UUID(approval["id"])
    assert approval["workspace_id"] == "acme"
    assert (approval["status"], approval["version"]) == ("pending", 1)
    action = msgspec.convert(ACTION, commands.Action)
    assert approval["digest"] == action_digest(action, {"rows": [1, 2]})
    created = datetime.fromisoformat(approval["created_at"])
    expires = datetime.fromisoformat(approval["expires_at"])
    assert expires - created == timedelta(seconds=command_settings.default_expiry_s)
    assert abs(datetime.now(UTC) - created) < timedelta(seconds=30)
    assert approval["resolved_at"] is None
    assert approval["web_url"] == (
        f"{command_settings.web_url}/workspaces/acme/approvals/{approval_id}"
    )
    # Check the store holds it, seen through an instance of its own.
    assert stored(service) == 1
    assert service.app is not None
    assert service.app.get(approval_id, "acme").status == "pending"


@pytest.mark.parametrize(
    "action",
    [
        {"kind": "read", "mode": "live"},
        {"kind": "crm_write", "mode": "dry_run"},
        {"kind": "crm_write", "mode": "smoke_test"},
    ],
    ids=["read", "dry_run", "smoke_test"],
)
async def test_reads_and_rehearsals_need_no_approval_and_store_nothing(
    command_service: Started, command_settings: Settings, action: dict[str, Any]
) -> None:
    _, client = command_service
    reply = await send(client, "request", {**REQUEST, "action": action})
    assert reply["ok"] is True
    assert (reply["outcome"], reply["approval"]) == ("not_required", None)
    separate = Approvals(store_env(command_settings))
    try:
        assert approval_notifications(separate) == []
    finally:
        separate.close()


@pytest.mark.parametrize(
    "action",
    [
        {"kind": "provider_call", "mode": "live", "provider": "clearbit"},
        {"kind": "column_run", "mode": "live", "scope": {"column": "score"}},
        {"kind": "workflow_fire", "mode": "live", "touches": ["read", "provider_call"]},
    ],
    ids=["provider_call", "column_run", "workflow_fire"],
)
async def test_a_live_credit_spender_without_a_ceiling_is_refused_and_stores_nothing(
    command_service: Started, action: dict[str, Any]
) -> None:
    service, client = command_service
    reply = await send(client, "request", {**REQUEST, "action": action})
    assert reply["ok"] is False
    assert reply["error"]["code"] == "credit_ceiling_required"
    assert stored(service) == 0


@pytest.mark.parametrize(
    ("verb", "body", "outcome", "status"),
    [
        ("approve", {"approver": "user:ana", "reason": "fine"}, "approved", "approved"),
        ("reject", {"approver": "user:ana", "rerun": True}, "rejected", "rejected"),
        ("cancel", {"by": "service:enricher", "reason": "not needed"}, "cancelled", "cancelled"),
    ],
)
async def test_each_decision_replies_with_its_outcome_and_the_next_version(
    command_service: Started, verb: str, body: dict[str, Any], outcome: str, status: str
) -> None:
    service, client = command_service
    approval = await request(client)
    extra = {"digest": approval["digest"]} if verb == "approve" else {}
    reply = await send(client, verb, {"approval_id": approval["id"], **body, **extra})
    assert (reply["ok"], reply["outcome"]) == (True, outcome)
    decided = reply["approval"]
    assert (decided["id"], decided["status"], decided["version"]) == (approval["id"], status, 2)
    assert decided["resolved_at"] is not None
    assert decided["decided_by"] == body.get("approver", body.get("by"))
    assert decided["reason"] == body.get("reason")
    assert stored(service) == 2
    if verb == "reject":
        # Check the rerun flag is in the stored event.
        assert service.app is not None
        notification = notifications(service)[1]
        event = event_decoder.decode(notification.state)
        assert isinstance(event, Rejected)
        assert event.rerun is True


async def test_a_delivery_keeps_the_approval_pending_at_the_next_version(
    command_service: Started,
) -> None:
    _, client = command_service
    approval = await request(client)
    delivery = {"channel": "slack", "target": "#ops", "external_ref": "ts-1"}
    reply = await send(client, "deliver", {"approval_id": approval["id"], **delivery})
    assert (reply["ok"], reply["outcome"]) == (True, "delivered")
    assert (reply["approval"]["status"], reply["approval"]["version"]) == ("pending", 2)
    assert reply["approval"]["deliveries"] == [delivery]
    assert reply["approval"]["resolved_at"] is None
    # Check a decision after the delivery takes version 3.
    approved = await send(client, "approve", approve_body(approval))
    assert (approved["outcome"], approved["approval"]["version"]) == ("approved", 3)
    # Check a channel that finished taking it after the decision is recorded (so it is told
    # the outcome), the approval still approved; once per channel.
    late = {"channel": "webhook", "target": "https://hooks.example.com", "external_ref": "w-1"}
    reply = await send(client, "deliver", {"approval_id": approval["id"], **late})
    assert (reply["outcome"], reply["approval"]["status"]) == ("delivered", "approved")
    assert reply["approval"]["deliveries"] == [delivery, late]
    again = await send(client, "deliver", {"approval_id": approval["id"], **late})
    assert again["error"]["details"]["rule"] == "delivered_once", again


# -- invariant errors -------------------------------------------------------------------------


async def test_a_decided_approval_refuses_a_second_decision(command_service: Started) -> None:
    service, client = command_service
    approval = await request(client)
    await send(client, "approve", approve_body(approval))
    for verb, body in [
        ("approve", approve_body(approval, "user:bo")),
        ("reject", {"approval_id": approval["id"], "approver": "user:bo"}),
        ("cancel", {"approval_id": approval["id"], "by": "user:bo"}),
        ("expire", {"approval_id": approval["id"]}),
    ]:
        reply = await send(client, verb, body)
        assert_error(reply, "already_decided")
        assert reply["error"]["details"]["status"] == "approved"
    assert stored(service) == 2


@pytest.mark.parametrize(
    ("changes", "approver"),
    [
        ({}, "service:approver-bot"),
        ({"requested_by": "user:ana"}, "user:ana"),
        ({"on_behalf_of": "user:bo"}, "user:bo"),
    ],
    ids=["a-service", "the-requester", "the-person-it-acts-for"],
)
async def test_forbidden_approvers(
    command_service: Started, changes: dict[str, Any], approver: str
) -> None:
    service, client = command_service
    approval = await request(client, **changes)
    reply = await send(client, "approve", approve_body(approval, approver))
    assert_error(reply, "forbidden")
    assert reply["error"]["details"]["approver"] == approver
    assert stored(service) == 1
    # Check someone else still may.
    assert (await send(client, "approve", approve_body(approval, "user:cy")))["ok"] is True


async def test_a_digest_other_than_the_requests_is_refused(command_service: Started) -> None:
    service, client = command_service
    approval = await request(client)
    reply = await send(client, "approve", {**approve_body(approval), "digest": "0" * 64})
    assert_error(reply, "digest_mismatch")
    assert reply["error"]["details"]["expected"] == approval["digest"]
    assert stored(service) == 1


async def test_an_unknown_or_foreign_approval_is_not_found(command_service: Started) -> None:
    service, client = command_service
    approval = await request(client)
    unknown = {**approve_body(approval), "approval_id": str(uuid4())}
    assert_error(await send(client, "approve", unknown), "not_found")
    # Check another workspace cannot see acme's approval, even with the right id and digest.
    globex = ApprovalsClient(client.nc, "globex", client.timeout)
    assert_error(await send(globex, "approve", approve_body(approval)), "not_found")
    assert_error(
        await send(globex, "cancel", {"approval_id": approval["id"], "by": "user:a"}), "not_found"
    )
    assert stored(service) == 1


async def test_after_its_deadline_an_approval_can_only_expire(command_service: Started) -> None:
    service, client = command_service
    approval = await request(client, expires_in_s=1)
    expires_at = datetime.fromisoformat(approval["expires_at"])

    async def deadline_passed() -> bool:
        return datetime.now(UTC) >= expires_at

    await eventually(deadline_passed)
    assert_error(await send(client, "approve", approve_body(approval)), "expired")
    assert_error(
        await send(client, "reject", {"approval_id": approval["id"], "approver": "user:a"}),
        "expired",
    )
    assert stored(service) == 1
    # Check the expiry itself is accepted now, and is final.
    expired = await send(client, "expire", {"approval_id": approval["id"]})
    assert (expired["outcome"], expired["approval"]["status"]) == ("expired", "expired")
    assert expired["approval"]["version"] == 2
    assert_error(await send(client, "approve", approve_body(approval)), "already_decided")


async def test_conflicts(command_service: Started) -> None:
    service, client = command_service
    approval = await request(client, idempotency_key="k-1")
    # Check the same key and action is the same approval, replayed.
    again = await send(client, "request", {**REQUEST, "idempotency_key": "k-1"})
    assert (again["approval"]["id"], again["replayed"]) == (approval["id"], True)
    # Check the same key for another payload is a conflict.
    other = {**REQUEST, "idempotency_key": "k-1", "proposed_payload": {"rows": 2}}
    reply = await send(client, "request", other)
    assert_error(reply, "conflict")
    assert reply["error"]["details"]["approval_id"] == approval["id"]
    # Check an expiry before the deadline is a conflict.
    assert_error(await send(client, "expire", {"approval_id": approval["id"]}), "conflict")
    assert stored(service) == 1


# -- bad input --------------------------------------------------------------------------------

BAD_INPUT: list[tuple[str, Any]] = [
    ("request", b'{"requested_by": "service:enricher", '),
    ("request", b"\xff\xfe not json"),
    ("request", {**REQUEST, "risk_level": 5}),
    ("request", {**REQUEST, "title": ["a", "list"]}),
    ("request", {**REQUEST, "expires_in_s": "soon"}),
    ("approve", {"approval_id": "not-a-uuid", "approver": "user:ana", "digest": "0" * 64}),
    ("request", {k: v for k, v in REQUEST.items() if k != "title"}),
    ("approve", {"approval_id": str(uuid4()), "approver": "user:ana"}),
    ("request", {**REQUEST, "colour": "red"}),
    ("request", {**REQUEST, "action": {**ACTION, "colour": "red"}}),
    ("cancel", {"approval_id": str(uuid4()), "by": "user:ana", "force": True}),
]
BAD_INPUT_IDS = [
    "truncated-json",
    "not-json",
    "risk-level-number",
    "title-list",
    "expiry-string",
    "approval-id-not-uuid",
    "missing-title",
    "missing-digest",
    "unknown-field",
    "unknown-action-field",
    "unknown-cancel-field",
]


@pytest.mark.parametrize(("verb", "body"), BAD_INPUT, ids=BAD_INPUT_IDS)
async def test_bad_input_is_invalid_and_stores_nothing(
    command_service: Started, verb: str, body: Any
) -> None:
    service, client = command_service
    await request(client)
    assert_error(await send(client, verb, body), "invalid")
    assert stored(service) == 1


async def test_an_illegal_workspace_token_is_invalid(command_service: Started) -> None:
    service, client = command_service
    msg = await client.nc.request("approvals.cmd.bad$ws.request", encoder.encode(REQUEST), 10)
    reply = msgspec.json.decode(msg.data)
    assert_error(reply, "invalid")
    assert reply["error"]["details"]["workspace"] == "bad$ws"
    assert stored(service) == 0


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param({"approver": "user:ana", "digest": "not-a-digest"},
                     "a digest: 64 lower-case hex characters", id="digest"),
        pytest.param({"approver": "ana", "digest": "0" * 64},
                     "an actor: user:<id>, service:<name>, policy:<rule> or grant:<id>",
                     id="actor"),
    ],
)  # fmt: skip
async def test_a_malformed_value_is_told_in_words_not_as_a_regex(
    command_service: Started, body: dict[str, Any], words: str
) -> None:
    service, client = command_service
    reply = await send(client, "approve", {"approval_id": str(uuid4()), **body})
    assert_error(reply, "invalid")
    assert words in reply["error"]["message"], reply
    assert "regex" not in reply["error"]["message"]
    msg = await client.nc.request("approvals.cmd.bad$ws.request", encoder.encode(REQUEST), 10)
    said = msgspec.json.decode(msg.data)["error"]["message"]
    assert "only letters, digits, '-' and '_', 1 to 64 of them" in said, said
    assert stored(service) == 0


async def test_a_command_over_the_size_limit_is_too_large(
    command_settings: Settings,
    start_commands: Callable[[Settings], AbstractAsyncContextManager[Started]],
) -> None:
    limited = msgspec.structs.replace(command_settings, max_payload_bytes=4096)
    async with start_commands(limited) as (service, client):
        reply = await send(client, "request", {**REQUEST, "proposed_payload": "x" * 8192})
        assert_error(reply, "too_large")
        assert reply["error"]["details"]["limit"] == 4096
        assert reply["error"]["details"]["size"] > 8192
        assert stored(service) == 0
        # Check a command under the limit still goes through.
        await request(client, proposed_payload="x" * 100)
        assert stored(service) == 1


# -- concurrency ------------------------------------------------------------------------------


async def test_200_concurrent_requests_get_200_distinct_approvals(
    command_service: Started,
) -> None:
    service, client = command_service
    approvals = await asyncio.gather(
        *(request(client, skill_execution_id=f"exec-{i}") for i in range(200))
    )
    ids = {a["id"] for a in approvals}
    assert len(ids) == 200
    written = notifications(service)
    assert len(written) == 200
    assert {str(n.originator_id) for n in written} == ids


async def test_20_concurrent_approvals_have_exactly_one_winner(command_service: Started) -> None:
    service, client = command_service
    approval = await request(client)
    replies = await asyncio.gather(
        *(send(client, "approve", approve_body(approval, f"user:u{i}")) for i in range(20))
    )
    winners = [r for r in replies if r["ok"]]
    assert [w["outcome"] for w in winners] == ["approved"]
    losers = [r for r in replies if not r["ok"]]
    assert len(losers) == 19
    for loser in losers:
        assert_error(loser, "already_decided")
        assert loser["error"]["details"]["decided_by"] == winners[0]["approval"]["decided_by"]
    assert [n.originator_version for n in notifications(service)] == [1, 2]


# -- events -----------------------------------------------------------------------------------


async def test_events_reach_the_stream_with_their_subject_and_message_id(
    command_service: Started,
) -> None:
    _, client = command_service
    approval = await request(client)
    await send(
        client, "deliver", {"approval_id": approval["id"], "channel": "slack", "target": "#a"}
    )
    await send(client, "approve", approve_body(approval))
    js = client.nc.jetstream()
    for version, event_type in enumerate(["requested", "delivered", "approved"], start=1):
        subject = f"approvals.events.acme.{approval['id']}.{event_type}"
        found: list[RawStreamMsg] = []

        async def arrived(subject: str = subject, found: list[RawStreamMsg] = found) -> bool:
            try:
                found.append(await js.get_last_msg(subjects.STREAM, subject))
            except NotFoundError:
                return False
            return True

        await eventually(arrived)
        [msg] = found
        assert msg.subject == subject
        assert (msg.headers or {})[subjects.MSG_ID_HEADER] == f"{approval['id']}:{version}"
        event = event_decoder.decode(msg.data or b"")
        assert (str(event.approval_id), event.version, event.event_type) == (
            approval["id"],
            version,
            event_type,
        )
    info = await js.stream_info(
        subjects.STREAM, subjects_filter=subjects.events_of("acme", approval["id"])
    )
    assert sum((info.state.subjects or {}).values()) == 3


# -- an answer instead of a decision ------------------------------------------------------------


async def test_an_answer_ends_the_request_and_it_never_runs(command_service: Started) -> None:
    service, client = command_service
    approval = await request(client)
    before = stored(service)
    # Check: the requester cannot answer its own request, an empty answer is invalid, and
    # neither stores anything.
    mine = {"approval_id": approval["id"], "approver": "service:enricher", "message": "ok"}
    assert_error(await send(client, "respond", mine), "forbidden")
    empty = {"approval_id": approval["id"], "approver": "user:ana", "message": ""}
    assert_error(await send(client, "respond", empty), "invalid")
    assert stored(service) == before
    # Check: a person who may approve it answers; the request ends, with the message.
    answer = {"approval_id": approval["id"], "approver": "user:ana", "message": "Which list?"}
    reply = await send(client, "respond", answer)
    assert (reply["ok"], reply["outcome"]) == (True, "responded"), reply
    shown = reply["approval"]
    assert (shown["status"], shown["reason"], shown["decided_by"]) == (
        "responded", "Which list?", "user:ana",
    )  # fmt: skip
    assert [event_decoder.decode(n.state).event_type for n in notifications(service)][-1] == (
        "responded"
    )
    # Check: nothing decides it afterwards, and it is never redeemed.
    assert_error(
        await send(client, "approve", approve_body(approval, "user:bo")), "already_decided"
    )
    assert_error(await send(client, "respond", answer), "already_decided")
    redeem = {"approval_id": approval["id"], "digest": approval["digest"],
              "executor": "service:enricher"}  # fmt: skip
    refused = await send(client, "redeem", redeem)
    assert_error(refused, "not_approved")
    assert refused["error"]["details"]["status"] == "responded"
