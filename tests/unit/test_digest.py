"""The action digest: what binds an approval to exactly what will run."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import pytest

from approvals.schemas import commands
from approvals.schemas.codec import command_decoders
from approvals.schemas.digest import action_digest
from approvals.services.approvals import domain

SCOPE = commands.Scope(
    table="contacts",
    column="email",
    workflow="enrich",
    filters={"country": "PT", "tier": {"min": 1, "max": 3}},
    row_ids=("r1", "r2"),
    row_count=2,
)
ACTION = commands.Action(
    kind="crm_write",
    mode="live",
    provider="hubspot",
    destination="crm:contacts",
    scope=SCOPE,
    max_credits=12.5,
    expected_credits=4.0,
    preview={"rows": 2},
)
PAYLOAD = {"set": {"status": "qualified", "note": "Olá"}, "ids": [1, 2]}
BASE = action_digest(ACTION, PAYLOAD)


def with_action(**changes: Any) -> commands.Action:
    return msgspec.structs.replace(ACTION, **changes)


def with_scope(**changes: Any) -> commands.Action:
    return with_action(scope=msgspec.structs.replace(SCOPE, **changes))


def test_the_digest_is_64_lowercase_hex() -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", BASE)


def test_the_canonical_form_is_sorted_compact_utf8_json() -> None:
    # Check one digest by hand: keys sorted at every depth, no spaces, absent fields as null,
    # non-ASCII as raw UTF-8, floats as JSON numbers. Changing this form breaks every stored
    # digest (and every client that computes one), so it must not change by accident.
    canonical = (
        '{"action":{"kind":"crm_write","mode":"live","provider":"hubspot"},'
        '"destination":"crm:contacts",'
        '"max_credits":12.5,'
        '"proposed_payload":{"ids":[1,2],"set":{"note":"Olá","status":"qualified"}},'
        '"scope":{"column":"email","filters":{"country":"PT","tier":{"max":3,"min":1}},'
        '"row_count":2,"row_ids":["r1","r2"],"table":"contacts","workflow":"enrich"}}'
    )
    assert hashlib.sha256(canonical.encode("utf-8")).hexdigest() == BASE


def test_a_minimal_action_digests_its_absent_fields_as_null() -> None:
    canonical = (
        '{"action":{"kind":"read","mode":"dry_run","provider":null},"destination":null,'
        '"max_credits":null,"proposed_payload":null,"scope":{"column":null,"filters":null,'
        '"row_count":null,"row_ids":null,"table":null,"workflow":null}}'
    )
    action = commands.Action(kind="read", mode="dry_run")
    assert action_digest(action, None) == hashlib.sha256(canonical.encode()).hexdigest()


def test_key_order_in_payload_and_filters_does_not_matter() -> None:
    reordered_filters = {"tier": {"max": 3, "min": 1}, "country": "PT"}
    reordered_payload = {"ids": [1, 2], "set": {"note": "Olá", "status": "qualified"}}
    assert list(reordered_payload) != list(PAYLOAD)
    assert action_digest(with_scope(filters=reordered_filters), reordered_payload) == BASE


def test_omitted_and_explicit_null_fields_give_the_same_digest() -> None:
    decode = command_decoders["request"].decode
    body: dict[str, Any] = {
        "requested_by": "service:enricher",
        "skill_name": "s",
        "skill_execution_id": "e",
        "title": "t",
        "summary": "s",
        "risk_level": "low",
        "action": {"kind": "crm_write", "mode": "live"},
    }
    explicit = {
        **body,
        "action": {
            "kind": "crm_write",
            "mode": "live",
            "provider": None,
            "destination": None,
            "max_credits": None,
            "scope": {"table": None, "filters": None},
        },
        "proposed_payload": None,
    }
    omitted = decode(msgspec.json.encode(body))
    spelled_out = decode(msgspec.json.encode(explicit))
    assert isinstance(omitted, commands.Request)
    assert isinstance(spelled_out, commands.Request)
    assert action_digest(omitted.action, omitted.proposed_payload) == action_digest(
        spelled_out.action, spelled_out.proposed_payload
    )


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        pytest.param(with_action(kind="publish"), PAYLOAD, id="kind"),
        pytest.param(with_action(mode="dry_run"), PAYLOAD, id="mode"),
        pytest.param(with_action(provider="salesforce"), PAYLOAD, id="provider"),
        pytest.param(with_action(provider=None), PAYLOAD, id="provider-none"),
        pytest.param(with_action(destination="crm:deals"), PAYLOAD, id="destination"),
        pytest.param(with_action(max_credits=12.6), PAYLOAD, id="max_credits"),
        pytest.param(with_action(max_credits=None), PAYLOAD, id="max_credits-none"),
        pytest.param(with_scope(table="deals"), PAYLOAD, id="scope.table"),
        pytest.param(with_scope(column="phone"), PAYLOAD, id="scope.column"),
        pytest.param(with_scope(workflow="other"), PAYLOAD, id="scope.workflow"),
        pytest.param(with_scope(filters={"country": "ES"}), PAYLOAD, id="scope.filters"),
        pytest.param(with_scope(row_ids=("r1", "r3")), PAYLOAD, id="scope.row_ids"),
        pytest.param(with_scope(row_ids=("r2", "r1")), PAYLOAD, id="scope.row_ids-order"),
        pytest.param(with_scope(row_count=3), PAYLOAD, id="scope.row_count"),
        pytest.param(ACTION, {**PAYLOAD, "ids": [1, 2, 3]}, id="payload"),
        pytest.param(ACTION, {**PAYLOAD, "extra": None}, id="payload-extra-key"),
        pytest.param(ACTION, None, id="payload-none"),
    ],
)
def test_any_change_to_what_would_run_changes_the_digest(
    action: commands.Action, payload: Any
) -> None:
    assert action_digest(action, payload) != BASE


@pytest.mark.parametrize(
    "action",
    [
        pytest.param(with_action(expected_credits=9.0), id="expected_credits"),
        pytest.param(with_action(expected_credits=None), id="expected_credits-none"),
        pytest.param(with_action(preview={"rows": 3, "sample": ["x"]}), id="preview"),
        pytest.param(with_action(preview=None), id="preview-none"),
    ],
)
def test_estimates_and_previews_are_not_part_of_the_binding(action: commands.Action) -> None:
    assert action_digest(action, PAYLOAD) == BASE


def test_title_and_summary_are_not_part_of_the_binding() -> None:
    def requested(title: str, summary: str) -> str:
        cmd = commands.Request(
            requested_by="service:enricher",
            skill_name="crm-sync",
            skill_execution_id="exec-1",
            title=title,
            summary=summary,
            risk_level="high",
            action=ACTION,
            proposed_payload=PAYLOAD,
        )
        event = domain.request(
            cmd,
            approval_id=UUID(int=1),
            workspace_id="acme",
            now=datetime(2030, 1, 1, tzinfo=UTC),
            default_expiry_s=60,
        )
        return event.digest

    assert requested("Sync 2 contacts", "Writes 2") == BASE
    assert requested("Something else", "Reads like a different thing") == BASE
