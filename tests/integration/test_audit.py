"""Audit, end to end: the `approvals audit` CLI (as a process) against a running command service
and status projection on each store backend, with tampering done directly in the database."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import msgspec
import pytest

from approvals.client import ApprovalsClient
from approvals.projections.status.service import ProjectionService
from approvals.schemas import chain, events
from approvals.schemas.audit import Checkpoint, CheckpointBody
from approvals.schemas.codec import encoder
from approvals.schemas.subjects import CHECKPOINTS, NOTIFICATION_ID_HEADER
from approvals.schemas.workspace import Budget
from approvals.services.approvals.receipts import Signer
from approvals.services.approvals.service import CommandService
from approvals.services.audit.checkpoints import all_checkpoints
from approvals.services.audit.source import aggregate_records
from tests.e2e.devserver import free_port
from tests.helpers import eventually
from tests.workspaces import ADMIN, SETTINGS, configure_over_nats

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from approvals.services.approvals.application import Approvals
    from approvals.services.runtime.natsserver import NatsServer
    from approvals.services.runtime.settings import Settings

APPROVALS = str(Path(sys.executable).parent / "approvals")
WORKSPACE = "audited"
REQUESTER = "service:enricher"


@dataclass
class Audited:
    settings: Settings
    commands: CommandService
    projection: ProjectionService
    client: ApprovalsClient
    ids: dict[str, str]  # approved, rejected, cancelled, pending
    digests: dict[str, str]
    approved_at_position: int  # the position of the approval's event
    before_approval: datetime

    @property
    def app(self) -> Approvals:
        assert self.commands.app is not None
        return self.commands.app

    async def cli(self, *args: str, nats_url: str | None = None) -> tuple[int, Any]:
        """Run `approvals --json ARGS` against this store and bus: exit code and JSON output."""
        env = {**os.environ, "NATS_URL": nats_url or self.settings.nats_url,
               "APPROVALS_STORE": self.settings.store}  # fmt: skip
        if self.settings.store == "sqlite":
            env["APPROVALS_SQLITE_PATH"] = str(self.settings.sqlite_path)
        else:
            env["APPROVALS_POSTGRES_DSN"] = str(self.settings.postgres_dsn)
            env["APPROVALS_POSTGRES_SCHEMA"] = str(self.settings.postgres_schema)
        process = await asyncio.create_subprocess_exec(
            APPROVALS, "--json", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        assert process.returncode is not None
        assert out.strip() or process.returncode == 0, f"no output; stderr {err[-3000:]!r}"
        try:
            document = json.loads(out) if out.strip() else None
        except json.JSONDecodeError:
            raise AssertionError(f"not JSON: {out[:500]!r}; stderr {err[-2000:]!r}") from None
        return process.returncode, document

    async def sealed(self) -> list[Checkpoint]:
        """Wait until a checkpoint covers the whole log; every checkpoint."""
        head = self.app.last_notification_id()
        found: list[Checkpoint] = []

        async def covered() -> bool:
            nonlocal found
            found = await all_checkpoints(self.client.nc)
            return bool(found) and found[-1].position >= head

        await eventually(covered)
        return found


async def ask(client: ApprovalsClient, title: str) -> dict[str, Any]:
    reply = await client.send("request", {
        "requested_by": REQUESTER, "skill_name": "enrich", "skill_execution_id": title,
        "title": title, "summary": "enrich rows", "risk_level": "low",
        "action": {"kind": "provider_call", "mode": "live", "provider": "clearbit",
                   "max_credits": 100},
    })  # fmt: skip
    assert reply.ok, reply
    assert reply.approval is not None
    return {"id": str(reply.approval.id), "digest": reply.approval.digest}


async def ok(client: ApprovalsClient, verb: Any, body: dict[str, Any]) -> None:
    reply = await client.send(verb, body)
    assert reply.ok, reply


@pytest.fixture
async def audited(
    settings: Settings, nats_server: NatsServer, tmp_path: Path
) -> AsyncIterator[Audited]:
    key = tmp_path / "signing-key.pem"
    Signer.from_file(key, create=True)
    settings = msgspec.structs.replace(settings, nats_url=nats_server.url, signing_key_path=key,
                                       checkpoint_interval_s=0.2)  # fmt: skip
    async with CommandService(settings) as commands, ProjectionService(settings) as projection:
        client = await ApprovalsClient.connect(nats_server.url, WORKSPACE, reply_timeout=10.0)
        await configure_over_nats(client.nc, "acme")
        budgeted = msgspec.structs.replace(SETTINGS, budget=Budget(cap=1000, period="month"))
        await ok(client, "configure", {"settings": budgeted, "by": ADMIN})
        asked = {name: await ask(client, name)
                 for name in ("approved", "rejected", "cancelled", "pending")}  # fmt: skip
        before = datetime.now(UTC)
        a = asked["approved"]
        await ok(client, "approve", {"approval_id": a["id"], "approver": "user:ana",
                                     "digest": a["digest"], "reason": "looks right"})  # fmt: skip
        assert commands.app is not None
        approved_at = commands.app.last_notification_id() - 1  # approved, then credits_reserved
        await ok(client, "redeem", {"approval_id": a["id"], "digest": a["digest"],
                                    "executor": REQUESTER})  # fmt: skip
        await ok(client, "report", {"approval_id": a["id"], "credits_used": 60,
                                    "outcome": "succeeded", "by": REQUESTER})  # fmt: skip
        await ok(client, "reject", {"approval_id": asked["rejected"]["id"], "approver": "user:bo",
                                    "reason": "not this week"})  # fmt: skip
        await ok(client, "cancel", {"approval_id": asked["cancelled"]["id"], "by": REQUESTER,
                                    "reason": "not needed"})  # fmt: skip
        try:
            yield Audited(
                settings, commands, projection, client,
                ids={k: v["id"] for k, v in asked.items()},
                digests={k: v["digest"] for k, v in asked.items()},
                approved_at_position=approved_at, before_approval=before,
            )  # fmt: skip
        finally:
            await client.close()


async def test_history_names_who_decided_what_through_which_door(audited: Audited) -> None:
    code, story = await audited.cli("audit", "history", audited.ids["approved"])
    assert code == 0, story
    entries = story["entries"]
    assert [e["type"] for e in entries] == [
        "requested", "approved", "credits_reserved", "redeemed", "run_reported", "credits_settled",
    ]  # fmt: skip
    assert [e["aggregate"] for e in entries] == [
        "approval", "approval", "budget", "approval", "approval", "budget",
    ]  # fmt: skip
    positions = [e["position"] for e in entries]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    requested, approved = entries[0], entries[1]
    assert requested["actor"] == REQUESTER
    assert approved["actor"] == "user:ana"
    assert approved["via"] == {"channel": "client", "auth": "nats", "ref": None}
    assert approved["digest"] == requested["digest"] == audited.digests["approved"]
    assert approved["position"] == audited.approved_at_position
    assert "looks right" in approved["detail"]
    assert "used 60 credits" in entries[4]["detail"]
    assert all(len(e["hash"]) == 64 and e["schema_version"] == 2 for e in entries)
    assert approved["event"]["hash"] == approved["hash"]

    code, missing = await audited.cli("audit", "history", str(uuid4()))
    assert (code, missing["error"]["code"]) == (1, "not_found")
    code, bad = await audited.cli("audit", "history", "not-an-id")
    assert (code, bad["error"]["code"]) == (1, "invalid")


async def test_replay_from_store_and_stream_agree_and_match_the_read_model(
    audited: Audited,
) -> None:
    head = audited.app.last_notification_id()
    view = audited.projection.view
    assert view is not None
    await eventually(lambda: asyncio.to_thread(lambda: view.position() >= head))
    code, store = await audited.cli("audit", "replay", "--details", "--compare")
    assert code == 0, store
    statuses = {a["title"]: a["status"] for a in store["approvals"]}
    assert statuses == {"approved": "approved", "rejected": "rejected",
                        "cancelled": "cancelled", "pending": "pending"}  # fmt: skip
    [mine] = [w for w in store["workspaces"] if w["workspace_id"] == WORKSPACE]
    assert mine["approvals"] == {"approved": 1, "cancelled": 1, "pending": 1, "rejected": 1}
    [month] = mine["budgets"]
    assert (month["committed"], month["cap"], month["held"]) == (60, 1000, 0)
    assert store["comparison"] == {"compared": 4, "matching": 4, "differences": []}
    assert store["position"] == store["events"] == head

    code, stream = await audited.cli("audit", "replay", "--details", "--source", "stream")
    assert code == 0, stream
    assert {**stream, "source": "store", "comparison": None} == {**store, "comparison": None}

    # Back in time: by position, and by the clock.
    for bound in (["--position", str(audited.approved_at_position - 1)],
                  ["--at", audited.before_approval.isoformat()]):  # fmt: skip
        for source in ("store", "stream"):
            code, then = await audited.cli("audit", "replay", "--approval", audited.ids["approved"],
                                           "--source", source, *bound)  # fmt: skip
            assert code == 0, then
            [state] = then["approvals"]
            assert (state["status"], state["votes"], state["version"]) == ("pending", [], 1)
    code, after = await audited.cli("audit", "replay", "--approval", audited.ids["approved"],
                                    "--position", str(audited.approved_at_position))  # fmt: skip
    assert after["approvals"][0]["status"] == "approved"
    assert after["approvals"][0]["votes"] == ["user:ana"]

    # The comparison finds a read model that went wrong: it shows an approval nobody gave.
    pending = audited.ids["pending"]
    wrong = events.Approved(
        event_id=uuid4(), approval_id=UUID(pending), version=2, workspace_id=WORKSPACE,
        occurred_at=datetime.now(UTC), actor="user:ana", digest=audited.digests["pending"],
    )  # fmt: skip
    await asyncio.to_thread(view.project, [(head + 1000, wrong, encoder.encode(wrong))])
    code, differs = await audited.cli("audit", "replay", "--workspace", WORKSPACE, "--compare")
    assert code == 1, differs
    fields = {(d["approval_id"], d["field"]): d for d in differs["comparison"]["differences"]}
    assert fields[(pending, "status")]["replayed"] == "pending"
    assert fields[(pending, "status")]["read_model"] == "approved"
    assert differs["comparison"]["matching"] == 3
    code, refused = await audited.cli("audit", "replay", "--compare", "--position", "3")
    assert (code, refused["error"]["code"]) == (1, "invalid")


def stored(app: Approvals, aggregate: str, version: int) -> bytes:
    [record] = [
        r for r in aggregate_records(app, UUID(aggregate)) if r.originator_version == version
    ]
    return bytes(record.state)


def edit_stored(audited: Audited, aggregate: str, version: int, state: bytes | None) -> bytes:
    """Change (or, with None, delete) one stored event in the database itself; its old state."""
    recorder: Any = audited.app.recorder
    table = recorder.events_table_name
    if audited.settings.store == "sqlite":
        key = UUID(aggregate).hex
        with sqlite3.connect(audited.settings.sqlite_path) as db:
            [(old,)] = db.execute(f"SELECT state FROM {table} WHERE originator_id=? AND "
                                  "originator_version=?", (key, version)).fetchall()  # fmt: skip
            if state is None:
                db.execute(f"DELETE FROM {table} WHERE originator_id=? AND originator_version=?",
                           (key, version))  # fmt: skip
            else:
                db.execute(f"UPDATE {table} SET state=? WHERE originator_id=? AND "
                           "originator_version=?", (state, key, version))  # fmt: skip
        return bytes(old)
    import psycopg

    name = f'"{recorder.datastore.schema}"."{table}"'
    with psycopg.connect(os.environ["APPROVALS_TEST_POSTGRES_DSN"], autocommit=True) as db:
        [(old,)] = db.execute(f"SELECT state FROM {name} WHERE originator_id=%s AND "
                              "originator_version=%s", (aggregate, version)).fetchall()  # fmt: skip
        if state is None:
            db.execute(f"DELETE FROM {name} WHERE originator_id=%s AND originator_version=%s",
                       (aggregate, version))  # fmt: skip
        else:
            db.execute(f"UPDATE {name} SET state=%s WHERE originator_id=%s AND "
                       "originator_version=%s", (state, aggregate, version))  # fmt: skip
    return bytes(old)


async def test_verify_names_an_event_edited_in_the_database(audited: Audited) -> None:
    checkpoints = await audited.sealed()
    code, clean = await audited.cli("audit", "verify")
    assert code == 0, clean
    assert clean["ok"]
    assert clean["first_problem"] is None
    assert clean["checkpoints"] == len(checkpoints) >= 1
    assert clean["last_checkpoint"] == checkpoints[-1].position == clean["position"]
    assert clean["unsealed"] == 0

    # A plain edit: the rejection's reason, changed in place.
    rejected = audited.ids["rejected"]
    original = stored(audited.app, rejected, 2)
    edit_stored(audited, rejected, 2, original.replace(b"not this week", b"fine by me!!"))
    code, found = await audited.cli("audit", "verify", "--no-checkpoints")
    assert code == 1
    problem = found["first_problem"]
    assert (problem["code"], problem["aggregate_id"], problem["version"], problem["type"]) == (
        "hash_mismatch",
        rejected,
        2,
        "rejected",
    )
    history = (await audited.cli("audit", "history", rejected))[1]["entries"]
    assert problem["position"] == history[1]["position"]

    # Put back, it verifies again.
    edit_stored(audited, rejected, 2, original)
    assert (await audited.cli("audit", "verify"))[0] == 0

    # A careful edit: the cancellation's reason, with its hash recomputed. It is the last event
    # of its approval, so no later link catches it: the signed checkpoint does.
    cancelled = audited.ids["cancelled"]
    original = stored(audited.app, cancelled, 2)
    raw = json.loads(original)
    raw["reason"] = "approved after all"
    first = (await audited.cli("audit", "history", cancelled))[1]["entries"][0]["hash"]
    raw["hash"] = chain.link(first, chain.content(raw))
    edit_stored(audited, cancelled, 2, encoder.encode(raw))
    code, found = await audited.cli("audit", "verify")
    assert code == 1
    assert found["first_problem"]["code"] == "checkpoint_mismatch"
    assert found["first_problem"]["position"] == checkpoints[-1].position
    code, _ = await audited.cli("audit", "verify", "--no-checkpoints")
    assert code == 0, "the chains alone cannot see a recomputed last link"
    edit_stored(audited, cancelled, 2, original)

    # A deleted event: the approval's chain has a hole where it was.
    approved = audited.ids["approved"]
    redeemed = edit_stored(audited, approved, 3, None)
    code, found = await audited.cli("audit", "verify")
    assert code == 1
    problem = found["first_problem"]
    assert (problem["code"], problem["aggregate_id"], problem["version"]) == (
        "missing_event",
        approved,
        4,
    )
    assert found["events"] == clean["events"] - 1
    assert json.loads(redeemed)["type"] == "redeemed"


async def test_an_export_verifies_offline_and_an_edited_line_is_named(
    audited: Audited, tmp_path: Path
) -> None:
    await audited.sealed()
    exported, saved = tmp_path / "log.jsonl", tmp_path / "checkpoints.jsonl"
    assert (await audited.cli("audit", "export", "-o", str(exported)))[0] == 0
    assert (await audited.cli("audit", "checkpoints", "-o", str(saved)))[0] == 0
    code, keys = await audited.cli("keys")
    assert code == 0
    key = keys["keys"][0]["public_key"]
    lines = exported.read_bytes().splitlines()
    assert len(lines) == audited.app.last_notification_id()
    assert [json.loads(line)["position"] for line in lines] == list(range(1, len(lines) + 1))
    # Offline: nothing answers on this port.
    nowhere = f"nats://127.0.0.1:{free_port()}"
    offline = ("--export", str(exported), "--checkpoints", str(saved), "--public-key", key)
    code, result = await audited.cli("audit", "verify", *offline, nats_url=nowhere)
    assert code == 0, result
    assert result["source"] == "export"
    assert result["checkpoints"] >= 1

    victim = next(i for i, line in enumerate(lines) if b'"type":"requested"' in line)
    lines[victim] = lines[victim].replace(b'"title":"', b'"title":"X', 1)
    exported.write_bytes(b"\n".join(lines) + b"\n")
    code, result = await audited.cli("audit", "verify", *offline, nats_url=nowhere)
    assert code == 1
    assert result["first_problem"]["code"] == "hash_mismatch"
    assert result["first_problem"]["position"] == json.loads(lines[victim])["position"]

    code, result = await audited.cli("audit", "verify", "--export", str(exported),
                                     nats_url=nowhere)  # fmt: skip
    assert (code, result["error"]["code"]) == (1, "unavailable")

    only = tmp_path / "audited.jsonl"
    code, _ = await audited.cli("audit", "export", "--workspace", WORKSPACE, "--since",
                                audited.before_approval.isoformat(), "-o", str(only))  # fmt: skip
    assert code == 0
    kept = [json.loads(line) for line in only.read_bytes().splitlines()]
    assert kept
    assert all(e["workspace_id"] == WORKSPACE for e in kept)
    assert all(datetime.fromisoformat(e["occurred_at"]) >= audited.before_approval for e in kept)
    assert "requested" not in {e["type"] for e in kept}
    code, result = await audited.cli("audit", "verify", "--export", str(only),
                                     "--no-checkpoints")  # fmt: skip
    assert code == 0, result


async def test_checkpoints_carry_on_after_a_restart_and_forged_ones_are_refused(
    audited: Audited,
) -> None:
    before = await audited.sealed()
    await audited.commands.stop()
    async with CommandService(audited.settings) as again:
        audited.commands = again
        await ask(audited.client, "after the restart")
        after = await audited.sealed()
        await check_forged(audited, before, after)


async def check_forged(audited: Audited, before: list[Checkpoint], after: list[Checkpoint]) -> None:
    assert after[: len(before)] == before
    assert after[-1].position > before[-1].position
    code, result = await audited.cli("audit", "verify")
    assert code == 0, result
    assert result["checkpoints"] == len(after)

    # A checkpoint signed with another key, and one with this key's id and a made-up signature.
    js = audited.client.nc.jetstream()
    stranger = Signer.generate()
    last = after[-1]
    body = CheckpointBody(key_id=stranger.key_id, position=last.position, events=last.events,
                          log_hash="0" * 64, at=datetime.now(UTC))  # fmt: skip
    forged = Checkpoint(**msgspec.structs.asdict(body), signature=stranger.signature(body))
    await js.publish(CHECKPOINTS, encoder.encode(forged))
    code, result = await audited.cli("audit", "verify")
    assert (code, result["first_problem"]["code"], result["problems"]) == (
        1,
        "checkpoint_invalid",
        1,
    )
    assert "not known" in result["first_problem"]["message"]
    posing = msgspec.structs.replace(forged, key_id=last.key_id)
    await js.publish(CHECKPOINTS, encoder.encode(posing))
    code, result = await audited.cli("audit", "verify")
    assert (code, result["problems"]) == (1, 2)
    code, result = await audited.cli("audit", "verify", "--checkpoints", "/dev/null")
    assert code == 0, result


async def test_report_counts_decisions_and_credits_and_draws_them(
    audited: Audited, tmp_path: Path
) -> None:
    for suffix in ("png", "svg"):
        chart = tmp_path / f"decisions.{suffix}"
        code, report = await audited.cli("audit", "report", "--workspace", WORKSPACE,
                                         "--period", "day", "--chart", str(chart))  # fmt: skip
        assert code == 0, report
        [row] = report["rows"]
        assert row["workspace_id"] == WORKSPACE
        assert row["period"] == datetime.now(UTC).date().isoformat()
        counts = [row[k] for k in ("requests", "approved", "rejected", "expired", "cancelled",
                                   "pending")]  # fmt: skip
        assert counts == [4, 1, 1, 0, 1, 1]
        assert (row["credits_approved"], row["credits_used"]) == (100, 60)
        assert row["top_requesters"] == [[REQUESTER, 4]]
        assert row["median_decision_s"] is not None
        assert row["median_decision_s"] >= 0
        data = chart.read_bytes()
        if suffix == "png":
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
        else:
            assert ET.fromstring(data).tag.endswith("svg")
    code, refused = await audited.cli("audit", "report", "--chart", str(tmp_path / "x.gif"))
    assert (code, refused["error"]["code"]) == (1, "invalid")


async def test_the_read_model_stops_at_an_event_of_a_newer_version(
    audited: Audited, caplog: pytest.LogCaptureFixture
) -> None:
    head = audited.app.last_notification_id()
    view = audited.projection.view
    assert view is not None
    await eventually(lambda: asyncio.to_thread(lambda: view.position() >= head))
    newer = json.loads(audited.app.notifications(head, 1)[0].state)
    newer.update(schema_version=99, version=newer["version"] + 1, event_id=str(uuid4()))
    subject = f"approvals.events.{newer['workspace_id']}.{newer['approval_id']}.{newer['type']}"
    with caplog.at_level(logging.ERROR):
        await audited.client.nc.jetstream().publish(
            subject, encoder.encode(newer), headers={NOTIFICATION_ID_HEADER: str(head + 1)}
        )
        await eventually(lambda: "schema version 99" in caplog.text)
    assert await asyncio.to_thread(view.position) == head  # not skipped, not misread
