"""The wire contract: event codec round trips, command validation, subject names."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import pytest

from approvals.schemas import codec, commands, events, subjects
from approvals.schemas.codec import command_decoders
from approvals.schemas.wording import WORDS, in_words
from approvals.schemas.workspace import Change, Member, WorkspaceSettings

APPROVAL_ID = UUID("0b8f5a52-7c1e-4d7a-9a51-1f2a3b4c5d6e")
WHEN = datetime(2030, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)
DIGEST = "ab" * 32
COMMON: dict[str, Any] = {
    "event_id": UUID("7e57e7e5-0000-4000-8000-000000000001"),
    "approval_id": APPROVAL_ID,
    "workspace_id": "acme",
    "occurred_at": WHEN,
    "trace_id": "trace-1",
}

WS_COMMON: dict[str, Any] = {
    "event_id": UUID("7e57e7e5-0000-4000-8000-000000000002"),
    "aggregate_id": UUID("7e57e7e5-0000-4000-8000-000000000003"),
    "workspace_id": "acme",
    "occurred_at": WHEN,
}
EVENTS: dict[str, events.Event | events.WorkspaceEvent] = {
    "requested": events.Requested(
        **COMMON,
        version=1,
        actor="service:enricher",
        requested_by="service:enricher",
        skill_name="crm-sync",
        skill_execution_id="exec-1",
        title="Sync 2 contacts",
        summary="Writes 2 contacts",
        risk_level="critical",
        action=commands.Action(
            kind="crm_write",
            mode="live",
            provider="hubspot",
            scope=commands.Scope(table="contacts", filters={"a": [1, 2.5]}, row_ids=("r1",)),
            max_credits=3.5,
            preview={"rows": [{"id": "r1"}]},
        ),
        digest=DIGEST,
        expires_at=WHEN,
        idempotency_key="key-1",
        on_behalf_of="user:bob",
        proposed_payload={"set": {"x": None, "y": True, "z": "Olá"}},
    ),
    "delivered": events.Delivered(
        **COMMON, version=2, actor="service:delivery", channel="slack", target="#ops"
    ),
    "approved": events.Approved(
        **COMMON, version=3, actor="user:carol", digest=DIGEST, reason="fine"
    ),
    "rejected": events.Rejected(**COMMON, version=3, actor="user:carol", rerun=True),
    "expired": events.Expired(**COMMON, version=3, actor="service:scheduler"),
    "cancelled": events.Cancelled(**COMMON, version=3, actor="service:enricher", reason="x"),
    "responded": events.Responded(**COMMON, version=3, actor="user:carol", message="Which?"),
    "vote_cast": events.VoteCast(
        **COMMON, version=3, actor="user:ana", voter="user:ana", signed_as="user:ana",
        for_member="user:dave", digest=DIGEST,
    ),
    "workspace_configured": events.WorkspaceConfigured(
        **WS_COMMON, version=1, actor="user:ana",
        settings=WorkspaceSettings(members={"user:ana": Member(roles=("admin",))}),
        changes=(Change(path="members.user:ana.roles", after=["admin"]),),
    ),
    "delegated": events.Delegated(
        **WS_COMMON, version=2, actor="user:ana", delegator="user:ana", delegate="user:bo",
        ends_at=WHEN,
    ),
    "standing_used": events.StandingUsed(
        **WS_COMMON, version=1, actor="policy:small", rule="small", day="2030-01-01",
        approval_id=APPROVAL_ID, credits=2.0, total=2.0,
    ),
    "redeemed": events.Redeemed(
        **COMMON, version=3, actor="service:runner", executor="service:runner", digest="a" * 64,
    ),
    "run_reported": events.RunReported(
        **COMMON, version=4, actor="service:runner", credits_used=41.5, outcome="succeeded",
        summary="synced", external_refs=("hubspot:batch-1",), over_ceiling=True,
    ),
    "credits_reserved": events.CreditsReserved(
        **WS_COMMON, version=1, actor="service:approvals", period="2030-01",
        approval_id=APPROVAL_ID, credits=40.0, committed=40.0, cap=100.0,
    ),
    "credits_settled": events.CreditsSettled(
        **WS_COMMON, version=2, actor="service:approvals", period="2030-01",
        approval_id=APPROVAL_ID, reserved=40.0, used=41.5, committed=41.5, cap=100.0,
    ),
    "credits_released": events.CreditsReleased(
        **WS_COMMON, version=3, actor="service:spendcap", period="2030-01",
        approval_id=APPROVAL_ID, credits=40.0, committed=1.5, cap=100.0,
    ),
    "reminded": events.Reminded(**COMMON, version=3, actor="service:scheduler", count=1),
    "escalated": events.Escalated(**COMMON, version=4, actor="service:scheduler", group="leads"),
    "delivery_failed": events.DeliveryFailed(
        **COMMON, version=3, actor="service:delivery", channel="webhook",
        target="https://hooks.example.com/a", error="503 after 3 attempts", attempts=3,
    ),
    "api_key_created": events.ApiKeyCreated(
        **WS_COMMON, version=1, actor="user:admin", key_id="k" * 16, secret_sha256="a" * 64,
        acts_as="service:agent", name="agent",
    ),
    "grant_given": events.GrantGiven(
        **WS_COMMON, version=1, actor="user:ana", grant_id=APPROVAL_ID,
        requested_by="service:enricher", kind="provider_call", provider="clearbit",
        destination="crm:contacts", risk_level="medium", max_credits=4.0, runs=5, hours=8.0,
        expires_at=WHEN,
    ),
    "grant_used": events.GrantUsed(
        **WS_COMMON, version=2, actor=f"grant:{APPROVAL_ID}", grant_id=APPROVAL_ID,
        approval_id=UUID("7e57e7e5-0000-4000-8000-000000000009"), day="2030-01-01", runs=1,
        credits=4.0,
    ),
    "grant_revoked": events.GrantRevoked(
        **WS_COMMON, version=3, actor="user:bo", grant_id=APPROVAL_ID, reason="done",
    ),
    "passkey_registered": events.PasskeyRegistered(
        **WS_COMMON, version=1, actor="user:ana", member="user:ana", credential_id="c" * 43,
        public_key="pQECAyYgASFYIA", algorithm=-7, sign_count=0, rp_id="approvals.example.com",
        origin="https://approvals.example.com", session="link", name="laptop",
    ),
    "passkey_used": events.PasskeyUsed(
        **WS_COMMON, version=2, actor="user:ana", member="user:ana", credential_id="c" * 43,
        approval_id=APPROVAL_ID, sign_count=1,
    ),
    "passkey_removed": events.PasskeyRemoved(
        **WS_COMMON, version=3, actor="user:ana", member="user:ana", credential_id="c" * 43,
        reason="lost the laptop",
    ),
    "api_key_revoked": events.ApiKeyRevoked(
        **WS_COMMON, version=2, actor="user:admin", key_id="k" * 16,
    ),
    "request_counted": events.RequestCounted(
        **WS_COMMON, version=1, actor="service:approvals", requester="service:agent",
        approval_id=APPROVAL_ID,
        pending=(events.PendingHeld(approval_id=APPROVAL_ID, expires_at=COMMON["occurred_at"]),),
        recent=(COMMON["occurred_at"],),
    ),
    "spend_checked": events.SpendChecked(
        **COMMON, version=2, actor="service:spendcap", spend=events.SpendPicture(
            period="2030-01", cap=100.0, max_per_run=50.0, committed=40.0, remaining=60.0,
            ceiling=30.0, fits=True,
        ),
    ),
}  # fmt: skip


# -- events ----------------------------------------------------------------------------------


def test_every_event_type_is_covered() -> None:
    assert {type(e) for e in EVENTS.values()} == set(events.EVENT_TYPES)


@pytest.mark.parametrize("tag", sorted(EVENTS))
def test_an_event_round_trips_through_the_codec(tag: str) -> None:
    event = EVENTS[tag]
    wire = codec.encoder.encode(event)
    decoded = codec.event_decoder.decode(wire)
    assert type(decoded) is type(event)
    assert decoded == event
    assert json.loads(wire)["type"] == tag
    assert event.event_type == tag
    assert codec.envelope_decoder.decode(wire) == codec.EventEnvelope(tag, "acme")


def test_an_unknown_event_type_is_refused() -> None:
    wire = codec.encoder.encode(EVENTS["expired"]).replace(b'"expired"', b'"approval.expired"')
    unknown = re.escape("Invalid value 'approval.expired'")
    with pytest.raises(msgspec.ValidationError, match=unknown):
        codec.event_decoder.decode(wire)


# -- commands --------------------------------------------------------------------------------

VALID: dict[str, dict[str, Any]] = {
    "request": {
        "requested_by": "service:enricher",
        "skill_name": "crm-sync",
        "skill_execution_id": "exec-1",
        "title": "Sync 2 contacts",
        "summary": "Writes 2 contacts",
        "risk_level": "high",
        "action": {"kind": "crm_write", "mode": "live", "scope": {"table": "contacts"}},
    },
    "approve": {"approval_id": str(APPROVAL_ID), "approver": "user:carol", "digest": DIGEST},
    "reject": {"approval_id": str(APPROVAL_ID), "approver": "user:carol", "rerun": True},
    "cancel": {"approval_id": str(APPROVAL_ID), "by": "service:enricher"},
    "expire": {"approval_id": str(APPROVAL_ID)},
    "deliver": {"approval_id": str(APPROVAL_ID), "channel": "slack", "target": "#ops"},
    "configure": {
        "by": "user:ana",
        "settings": {"members": {"user:ana": {"roles": ["admin", "approver"]}}},
    },
    "delegate": {"by": "user:ana", "to": "user:bo", "ends_at": "2030-01-02T00:00:00Z"},
}
VALID["check"] = VALID["request"]
VALID["redeem"] = {"approval_id": str(APPROVAL_ID), "digest": "a" * 64, "executor": "service:x"}
VALID["report"] = {"approval_id": str(APPROVAL_ID), "credits_used": 3.5, "outcome": "succeeded",
                   "by": "service:x"}  # fmt: skip
VALID["check_spend"] = {"approval_id": str(APPROVAL_ID)}
VALID["remind"] = {"approval_id": str(APPROVAL_ID)}
VALID["escalate"] = {"approval_id": str(APPROVAL_ID), "by": "service:scheduler"}
VALID["release"] = {"approval_id": str(APPROVAL_ID), "by": "service:spendcap"}
VALID["create_api_key"] = {"key_id": "k" * 16, "secret_sha256": "a" * 64,
                           "actor": "service:agent", "by": "user:admin"}  # fmt: skip
VALID["revoke_api_key"] = {"key_id": "k" * 16, "by": "user:admin"}
VALID["revoke_grant"] = {"grant_id": str(APPROVAL_ID), "by": "user:bo"}
VALID["register_passkey"] = {
    "member": "user:ana",
    "credential": {"id": "c" * 43},
    "challenge": "h" * 43,
    "rp_id": "approvals.example.com",
    "origin": "https://approvals.example.com",
}
VALID["remove_passkey"] = {"credential_id": "c" * 43, "by": "user:ana"}
VALID["respond"] = {"approval_id": str(APPROVAL_ID), "approver": "user:carol", "message": "Why?"}


def decode(verb: str, body: dict[str, Any]) -> commands.Command:
    return command_decoders[verb].decode(json.dumps(body).encode())


def bad_pattern(field: str) -> str:
    """The message msgspec gives for a string that does not match its pattern."""
    return "matching regex .* - at " + re.escape(f"`$.{field}`")


def request_with(**action: Any) -> dict[str, Any]:
    return {**VALID["request"], "action": {**VALID["request"]["action"], **action}}


@pytest.mark.parametrize("verb", sorted(VALID))
def test_a_valid_command_decodes(verb: str) -> None:
    assert type(decode(verb, VALID[verb])) is commands.COMMANDS[verb]


@pytest.mark.parametrize(
    "wire", [b"", b"{", b'{"approval_id": }', b'{"approval_id"', b'{"a" 1}', b"not json"]
)
def test_malformed_json_is_a_decode_error(wire: bytes) -> None:
    with pytest.raises(msgspec.DecodeError) as refused:
        command_decoders["approve"].decode(wire)
    assert not isinstance(refused.value, msgspec.ValidationError)


@pytest.mark.parametrize(
    ("verb", "body"),
    [
        pytest.param("approve", {**VALID["approve"], "approval_id": 123}, id="uuid-as-int"),
        pytest.param("approve", {**VALID["approve"], "approval_id": "nope"}, id="bad-uuid"),
        pytest.param("reject", {**VALID["reject"], "rerun": "yes"}, id="bool-as-str"),
        pytest.param("request", {**VALID["request"], "title": 5}, id="str-as-int"),
        pytest.param("request", request_with(max_credits="10"), id="float-as-str"),
        pytest.param("request", {**VALID["request"], "expires_in_s": 1.5}, id="int-as-float"),
        pytest.param("request", {**VALID["request"], "action": []}, id="object-as-array"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused(verb: str, body: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode(verb, body)


REQUIRED = [
    (verb, field.encode_name)
    for verb, cls in commands.COMMANDS.items()
    for field in msgspec.structs.fields(cls)
    if field.required
]


def test_every_command_has_required_fields() -> None:
    assert {verb for verb, _ in REQUIRED} == set(commands.COMMANDS)


@pytest.mark.parametrize(("verb", "field"), REQUIRED)
def test_a_missing_required_field_is_refused(verb: str, field: str) -> None:
    body = {k: v for k, v in VALID[verb].items() if k != field}
    with pytest.raises(msgspec.ValidationError, match=f"missing required field `{field}`"):
        decode(verb, body)


@pytest.mark.parametrize("field", ["kind", "mode"])
def test_an_action_without_kind_or_mode_is_refused(field: str) -> None:
    action = {k: v for k, v in VALID["request"]["action"].items() if k != field}
    with pytest.raises(msgspec.ValidationError, match=f"missing required field `{field}`"):
        decode("request", {**VALID["request"], "action": action})


@pytest.mark.parametrize("verb", sorted(VALID))
def test_an_unknown_field_is_refused(verb: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `approved`"):
        decode(verb, {**VALID[verb], "approved": True})


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(request_with(run_now=True), id="in-action"),
        pytest.param(request_with(scope={"table": "t", "everything": True}), id="in-scope"),
    ],
)
def test_an_unknown_field_inside_the_action_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        decode("request", body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({**VALID["request"], "risk_level": "severe"}, id="risk_level"),
        pytest.param({**VALID["request"], "risk_level": "HIGH"}, id="risk_level-case"),
        pytest.param(request_with(kind="delete_everything"), id="kind"),
        pytest.param(request_with(mode="LIVE"), id="mode"),
        pytest.param(request_with(mode=None), id="mode-null"),
    ],
)
def test_a_value_outside_an_enum_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode("request", body)


BAD_ACTORS = [
    "ana",
    "user:",
    "admin:ana",
    "User:ana",
    "user:ana smith",
    "user:ana\n",
    "\nuser:ana",
    "user:ana/x",
    "user:" + "a" * 129,
    "user:anà",
]
ACTOR_FIELDS = [("request", "requested_by"), ("approve", "approver"), ("cancel", "by")]


@pytest.mark.parametrize("actor", BAD_ACTORS)
@pytest.mark.parametrize(("verb", "field"), ACTOR_FIELDS)
def test_an_actor_must_be_user_service_or_policy(verb: str, field: str, actor: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=bad_pattern(field)):
        decode(verb, {**VALID[verb], field: actor})


@pytest.mark.parametrize(
    "actor", ["user:ana", "service:enricher", "policy:auto-approve", "user:a.b+c@x.io", "user:a"]
)
def test_well_formed_actors_are_accepted(actor: str) -> None:
    cmd = decode("approve", {**VALID["approve"], "approver": actor})
    assert isinstance(cmd, commands.Approve)
    assert cmd.approver == actor


@pytest.mark.parametrize("person", ["service:enricher", "policy:x", "user:bob\n"])
def test_on_behalf_of_must_be_a_person(person: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=bad_pattern("on_behalf_of")):
        decode("request", {**VALID["request"], "on_behalf_of": person})


@pytest.mark.parametrize(
    "digest", ["", "a" * 63, "a" * 65, "A" * 64, "g" * 64, "a" * 64 + "\n", " " + "a" * 63]
)
def test_a_digest_must_be_64_lowercase_hex(digest: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=bad_pattern("digest")):
        decode("approve", {**VALID["approve"], "digest": digest})


@pytest.mark.parametrize("field", ["max_credits", "expected_credits"])
@pytest.mark.parametrize("credits", [-1, -0.01])
def test_negative_credits_are_refused(field: str, credits: float) -> None:
    with pytest.raises(msgspec.ValidationError, match=">= 0"):
        decode("request", request_with(**{field: credits}))


def test_zero_credits_are_accepted() -> None:
    cmd = decode("request", request_with(max_credits=0))
    assert isinstance(cmd, commands.Request)
    assert cmd.action.max_credits == 0


# -- subjects --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "acme", "ACME-prod_2", "0" * 64, "-", "_"])
def test_a_token_may_be_letters_digits_dash_underscore(value: str) -> None:
    assert subjects.token(value) == value
    assert subjects.is_token(value)


@pytest.mark.parametrize(
    "value", ["", "a" * 65, "a.b", "a*", "a>", ">", "*", "a b", "a\n", "\nabc", "ação", "\uff45"]
)
def test_anything_else_is_an_illegal_token(value: str) -> None:
    assert not subjects.is_token(value)
    with pytest.raises(subjects.IllegalToken, match="workspace"):
        subjects.token(value, "workspace")


@pytest.mark.parametrize("verb", subjects.COMMAND_VERBS)
def test_a_command_subject_names_workspace_and_verb(verb: subjects.CommandVerb) -> None:
    assert subjects.command("acme", verb) == f"approvals.cmd.acme.{verb}"


def test_a_command_subject_refuses_an_illegal_workspace() -> None:
    with pytest.raises(subjects.IllegalToken):
        subjects.command("acme.other", "approve")


def test_an_event_subject_names_workspace_approval_and_type() -> None:
    subject = subjects.event("acme", str(APPROVAL_ID), "approved")
    assert subject == f"approvals.events.acme.{APPROVAL_ID}.approved"
    assert subjects.workspace_of(subject) == "acme"


@pytest.mark.parametrize(
    ("workspace", "approval_id", "event_type"),
    [("a.b", "id", "approved"), ("acme", "id.*", "approved"), ("acme", "id", "x>")],
)
def test_an_event_subject_refuses_an_illegal_token(
    workspace: str, approval_id: str, event_type: str
) -> None:
    with pytest.raises(subjects.IllegalToken):
        subjects.event(workspace, approval_id, event_type)


def test_the_message_id_is_approval_and_version() -> None:
    assert subjects.msg_id(str(APPROVAL_ID), 3) == f"{APPROVAL_ID}:3"


def patterns_in(kind: msgspec.inspect.Type, seen: set[type]) -> set[str]:
    """Every string pattern a type holds, however deep."""
    match kind:
        case msgspec.inspect.StrType(pattern=str() as pattern):
            return {pattern}
        case msgspec.inspect.StructType(cls=cls) if cls not in seen:
            seen.add(cls)
            return set().union(*(patterns_in(f.type, seen) for f in kind.fields))
        case msgspec.inspect.UnionType(types=options):
            return set().union(*(patterns_in(t, seen) for t in options))
        case (msgspec.inspect.ListType(item_type=item) | msgspec.inspect.VarTupleType(
                item_type=item) | msgspec.inspect.SetType(item_type=item)
              | msgspec.inspect.FrozenSetType(item_type=item)):  # fmt: skip
            return patterns_in(item, seen)
        case msgspec.inspect.DictType(key_type=key, value_type=value):
            return patterns_in(key, seen) | patterns_in(value, seen)
        case msgspec.inspect.TupleType(item_types=items):
            return set().union(*(patterns_in(t, seen) for t in items))
    return set()


def test_every_pattern_a_person_can_break_is_said_in_words() -> None:
    """A command or workspace file that breaks a pattern is told what was expected in words:
    each pattern the wire contract holds has its words in ``approvals.schemas.wording``."""
    roots = [*commands.COMMANDS.values(), WorkspaceSettings]
    found = set().union(*(patterns_in(msgspec.inspect.type_info(r), set()) for r in roots))
    assert found, "no pattern found: the walk is broken"
    assert found <= set(WORDS), found - set(WORDS)
    with pytest.raises(msgspec.ValidationError) as refused:
        decode("approve", {**VALID["approve"], "digest": "xyz"})
    said = in_words(str(refused.value))
    assert said == "Expected a digest: 64 lower-case hex characters (SHA-256) - at `$.digest`"


def test_both_event_families_share_one_base_and_every_event_type_is_listed() -> None:
    def leaves(cls: type) -> set[type]:
        subclasses = cls.__subclasses__()
        return set().union(*map(leaves, subclasses)) if subclasses else {cls}

    assert issubclass(events.Event, events.EventBase)
    assert issubclass(events.WorkspaceEvent, events.EventBase)
    assert leaves(events.EventBase) == set(events.EVENT_TYPES)
    tags = [cls.__struct_config__.tag for cls in events.EVENT_TYPES]
    assert len(set(tags)) == len(tags)
