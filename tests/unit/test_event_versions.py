"""Every released schema version of every event still loads and replays; a newer one is refused.

The fixtures (tests/fixtures/events/v<N>/) were written by the release that stored version N
(see make.py there): one event of every type, and the whole story they came from as a log.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from approvals.schemas import chain
from approvals.schemas.codec import encoder, event_decoder
from approvals.schemas.events import SCHEMA_VERSION
from approvals.schemas.upcasting import TAGS, UnknownSchemaVersion
from approvals.services.audit.replay import Replay
from approvals.services.audit.source import export_sections
from approvals.services.audit.verify import Verifier

FIXTURES = Path(__file__).parents[1] / "fixtures" / "events"
VERSIONS = sorted(int(p.name[1:]) for p in FIXTURES.glob("v*") if p.is_dir())
# Event types a later release added: no earlier version stored them, so none has a fixture.
FIRST_VERSION = {
    "grant_given": 2,
    "grant_used": 2,
    "grant_revoked": 2,
    "request_counted": 2,
    "responded": 2,
    "passkey_registered": 2,
    "passkey_removed": 2,
    "passkey_used": 2,
}


def stored_in(version: int) -> set[str]:
    return {tag for tag in TAGS if FIRST_VERSION.get(tag, 1) <= version}


def test_there_is_a_fixture_of_every_event_type_in_every_released_version() -> None:
    assert list(range(1, SCHEMA_VERSION + 1)) == VERSIONS
    for version in VERSIONS:
        found = {p.stem for p in (FIXTURES / f"v{version}").glob("*.json")}
        assert found == stored_in(version), f"v{version}: missing {stored_in(version) - found}"


@pytest.mark.parametrize(
    ("version", "kind"),
    [(v, kind) for kind in TAGS for v in VERSIONS if kind in stored_in(v)],
    ids=lambda x: str(x),
)
def test_every_released_version_loads_as_the_current_one(version: int, kind: str) -> None:
    stored = (FIXTURES / f"v{version}" / f"{kind}.json").read_bytes()
    raw = json.loads(stored)
    assert raw.get("schema_version", 1) == version
    event = event_decoder.decode(stored)
    assert event.event_type == kind
    assert event.schema_version == SCHEMA_VERSION
    current = json.loads(encoder.encode(event))
    # Everything the old event said is read unchanged; what it could not say is empty.
    for field, value in raw.items():
        if field != "schema_version":
            assert said(current[field], value), field
    if version == 1:
        assert event.via is None
        assert event.hash == ""


def said(current: object, old: object) -> bool:
    """``current`` says what ``old`` said; keys it adds (a table's newer fields) are empty."""
    if isinstance(current, dict) and isinstance(old, dict):
        added = current.keys() - old.keys()
        return all(current[k] in (None, [], {}) for k in added) and all(
            k in current and said(current[k], v) for k, v in old.items()
        )
    return current == old


@pytest.mark.parametrize("version", VERSIONS)
def test_every_released_log_replays_to_the_same_state(version: int) -> None:
    replays = {}
    for v in (version, SCHEMA_VERSION):
        with (FIXTURES / f"v{v}" / "log.jsonl").open("rb") as lines:
            replay = Replay()
            for section in export_sections(lines):
                assert replay.feed(section)
        replays[v] = replay.result("export", details=True)
    old, new = replays[version], replays[SCHEMA_VERSION]
    assert old.events == new.events == 30
    assert old.workspaces == new.workspaces
    assert [a.status for a in old.approvals] == [a.status for a in new.approvals]
    assert sorted(a.status for a in old.approvals) == [
        "approved", "approved", "approved", "cancelled", "expired", "rejected",
    ]  # fmt: skip
    assert old.approvals == new.approvals  # same ids (idempotency keys), votes, credits, times


@pytest.mark.parametrize("version", VERSIONS)
def test_every_released_log_verifies(version: int) -> None:
    verifier = Verifier()
    with (FIXTURES / f"v{version}" / "log.jsonl").open("rb") as lines:
        for section in export_sections(lines):
            verifier.feed(section)
    result = verifier.finish("export")
    assert result.ok, result.first_problem
    assert result.events == 30
    assert result.unsealed == (30 if version == 1 else 0)


def test_a_newer_version_is_refused_not_misread() -> None:
    stored = json.loads((FIXTURES / f"v{SCHEMA_VERSION}" / "approved.json").read_bytes())
    newer = encoder.encode({**stored, "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(UnknownSchemaVersion, match=f"schema version {SCHEMA_VERSION + 1}"):
        event_decoder.decode(newer)
    # Even when its shape would decode: the version alone decides.
    with pytest.raises(UnknownSchemaVersion):
        event_decoder.decode_many([newer])
    for nonsense in (0, -1, "2", True, None):
        with pytest.raises(msgspec.ValidationError):
            event_decoder.decode(encoder.encode({**stored, "schema_version": nonsense}))


def test_a_current_event_of_the_wrong_shape_is_refused_as_invalid() -> None:
    stored = json.loads((FIXTURES / f"v{SCHEMA_VERSION}" / "approved.json").read_bytes())
    del stored["digest"]
    with pytest.raises(msgspec.ValidationError, match="digest"):
        event_decoder.decode(encoder.encode(stored))
    with pytest.raises(msgspec.ValidationError):
        event_decoder.decode(encoder.encode({**stored, "type": "no_such_event"}))


def test_the_stored_hash_is_the_link_recomputed_from_the_stored_json() -> None:
    with (FIXTURES / f"v{SCHEMA_VERSION}" / "log.jsonl").open("rb") as lines:
        records = [r for section in export_sections(lines) for r in section]
    links: dict[object, str] = {}
    for record in records:
        raw = json.loads(record.state)
        computed = chain.link(links.get(record.originator_id, chain.GENESIS), chain.content(raw))
        assert raw["hash"] == computed
        links[record.originator_id] = computed
