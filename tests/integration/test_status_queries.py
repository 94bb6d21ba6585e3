"""Queries, waiting, expiry and rebuilds through a real nats-server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec
import nats
import pytest

from approvals.client import ApprovalsClient
from approvals.projections.status import rebuild
from approvals.projections.status.service import ProjectionService
from approvals.projections.status.storage import open_view
from approvals.services.approvals.service import CommandService
from tests.helpers import eventually
from tests.workspaces import configure_over_nats

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from approvals.services.runtime.natsserver import NatsServer
    from approvals.services.runtime.settings import Settings

REQUEST = {
    "requested_by": "service:enricher",
    "skill_name": "crm-sync",
    "skill_execution_id": "exec-1",
    "title": "Sync 40 contacts to HubSpot",
    "summary": "Writes 40 contacts",
    "risk_level": "high",
    "action": {"kind": "crm_write", "mode": "live", "max_credits": 40},
}


class System(msgspec.Struct):
    settings: Settings
    commands: CommandService
    projection: ProjectionService
    client: ApprovalsClient

    async def ask(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = msgspec.json.decode(await self.client.query(verb, body))
        return reply

    async def request(self, **changes: Any) -> dict[str, Any]:
        reply = await self.client.send("request", {**REQUEST, **changes})
        assert reply.ok, reply.error
        assert reply.approval is not None
        return msgspec.to_builtins(reply.approval)  # type: ignore[no-any-return]


@pytest.fixture
async def system(settings: Settings, nats_server: NatsServer) -> AsyncIterator[System]:
    settings = msgspec.structs.replace(settings, nats_url=nats_server.url)
    async with CommandService(settings) as cmd, ProjectionService(settings) as projection:
        client = await ApprovalsClient.connect(nats_server.url, "acme", reply_timeout=10.0)
        await configure_over_nats(client.nc)
        yield System(settings, cmd, projection, client)
        await client.close()


async def test_get_reads_its_own_write_and_history_shows_the_timeline(system: System) -> None:
    approval = await system.request()
    # Check get with min_version waits until the projection caught up with the request.
    got = await system.ask("get", {"approval_id": approval["id"], "min_version": 1})
    assert got["ok"], got
    assert got["approval"]["status"] == "pending"
    assert got["approval"]["digest"] == approval["digest"]
    assert got["approval"]["web_url"].endswith(f"/workspaces/acme/approvals/{approval['id']}")
    reply = await system.client.send(
        "approve",
        {"approval_id": approval["id"], "approver": "user:ana", "digest": approval["digest"]},
    )
    assert reply.ok
    got = await system.ask("get", {"approval_id": approval["id"], "min_version": 2})
    assert (got["approval"]["status"], got["approval"]["version"]) == ("approved", 2)
    history = await system.ask("history", {"approval_id": approval["id"]})
    assert [e["type"] for e in history["timeline"]] == ["requested", "approved"]
    assert history["timeline"][1]["event"]["actor"] == "user:ana"


async def test_wait_answers_on_the_decision_and_at_once_when_already_decided(
    system: System,
) -> None:
    approval = await system.request()
    waiting = asyncio.create_task(
        system.ask("wait", {"approval_id": approval["id"], "timeout_s": 20})
    )
    await asyncio.sleep(0)  # let the wait go out before the decision
    await system.client.send(
        "reject",
        {"approval_id": approval["id"], "approver": "user:bo", "reason": "wrong list",
         "rerun": True},
    )  # fmt: skip
    answered = await asyncio.wait_for(waiting, 15)
    assert answered["ok"]
    assert (answered["approval"]["status"], answered["timed_out"]) == ("rejected", False)
    # Check the requester learns why, and that the person asks for a new request.
    rejection = ("rejected", "wrong list", True)
    assert _rejection(answered["approval"]) == rejection
    # Check a wait that begins after the decision answers at once.
    started = time.monotonic()
    again = await system.ask("wait", {"approval_id": approval["id"], "timeout_s": 20})
    assert _rejection(again["approval"]) == rejection
    assert time.monotonic() - started < 5
    # Check get and list carry them too.
    got = await system.ask("get", {"approval_id": approval["id"]})
    assert _rejection(got["approval"]) == rejection
    listed = await system.ask("list", {"status": "rejected"})
    assert [_rejection(item) for item in listed["items"]] == [rejection]


def _rejection(approval: dict[str, Any]) -> tuple[Any, Any, Any]:
    return approval["status"], approval.get("reason"), approval.get("rerun")


async def test_a_pending_approval_asks_for_no_rerun(system: System) -> None:
    approval = await system.request()
    got = await system.ask("get", {"approval_id": approval["id"], "min_version": 1})
    assert _rejection(got["approval"]) == ("pending", None, False)


async def test_wait_times_out_with_the_current_state(system: System) -> None:
    approval = await system.request()
    reply = await system.ask("wait", {"approval_id": approval["id"], "timeout_s": 0.3})
    assert reply["ok"]
    assert (reply["approval"]["status"], reply["timed_out"]) == ("pending", True)


async def test_list_and_count(system: System) -> None:
    first = await system.request(title="first", risk_level="low")
    await system.request(title="second")
    await system.request(title="third", skill_name="other")
    await system.ask("get", {"approval_id": first["id"], "min_version": 1})
    await eventually(lambda: _count_is(system, 3))
    page = await system.ask("list", {"limit": 2})
    assert [a["title"] for a in page["items"]] == ["third", "second"]
    rest = await system.ask("list", {"limit": 2, "cursor": page["next_cursor"]})
    assert [a["title"] for a in rest["items"]] == ["first"]
    assert rest["next_cursor"] is None
    # Check: oldest first (the review queue's order) pages the other way round.
    oldest = await system.ask("list", {"limit": 2, "order": "oldest"})
    assert [a["title"] for a in oldest["items"]] == ["first", "second"]
    after = await system.ask("list", {"limit": 2, "order": "oldest",
                                      "cursor": oldest["next_cursor"]})  # fmt: skip
    assert [a["title"] for a in after["items"]] == ["third"]
    assert [a["title"] for a in (await system.ask("list", {"risk_level": "low"}))["items"]] == [
        "first"
    ]
    assert [a["title"] for a in (await system.ask("list", {"skill_name": "other"}))["items"]] == [
        "third"
    ]
    counts = await system.ask("count", {})
    assert counts == {"ok": True, "counts": {"pending": 3}, "total": 3}


async def _count_is(system: System, total: int) -> bool:
    return bool((await system.ask("count", {}))["total"] == total)


@pytest.mark.parametrize(
    ("verb", "body", "code"),
    [
        ("get", {"approval_id": "00000000-0000-4000-8000-000000000000"}, "not_found"),
        ("history", {"approval_id": "00000000-0000-4000-8000-000000000000"}, "not_found"),
        (
            "wait",
            {"approval_id": "00000000-0000-4000-8000-000000000000", "timeout_s": 0.2},
            "not_found",
        ),
        ("get", {"approval_id": "not-a-uuid"}, "invalid"),
        ("list", {"status": "maybe"}, "invalid"),
        ("list", {"limit": 0}, "invalid"),
        ("list", {"cursor": "garbage"}, "invalid"),
        ("list", {"colour": "red"}, "invalid"),
        (
            "wait",
            {"approval_id": "00000000-0000-4000-8000-000000000000", "timeout_s": -1},
            "invalid",
        ),
    ],
)
async def test_bad_queries_get_the_error_shape(
    system: System, verb: str, body: dict[str, Any], code: str
) -> None:
    reply = await system.ask(verb, body)
    assert reply["ok"] is False
    assert reply["error"]["code"] == code
    assert reply["error"]["message"]


async def test_malformed_query_and_illegal_workspace_are_invalid(system: System) -> None:
    nc = system.client.nc
    malformed = msgspec.json.decode(
        (await nc.request("approvals.query.acme.get", b"{nope", 5)).data
    )
    assert malformed["error"]["code"] == "invalid"
    illegal = msgspec.json.decode((await nc.request("approvals.query.bad$ws.count", b"{}", 5)).data)
    assert illegal["error"]["code"] == "invalid"


async def test_expiry_happens_without_any_human_action(system: System) -> None:
    approval = await system.request(expires_in_s=1)
    # Check the scheduler expires it and a waiter hears about it.
    reply = await system.ask("wait", {"approval_id": approval["id"], "timeout_s": 15})
    assert (reply["approval"]["status"], reply["timed_out"]) == ("expired", False)
    assert reply["approval"]["decided_by"] == "service:scheduler"
    late = await system.client.send(
        "approve",
        {"approval_id": approval["id"], "approver": "user:ana", "digest": approval["digest"]},
    )
    assert late.error is not None
    assert late.error.code == "already_decided"


async def test_rebuilds_from_store_and_stream_equal_the_live_view(
    system: System, tmp_path: Any
) -> None:
    rejected: dict[UUID, tuple[str, bool]] = {}
    for i in range(30):
        approval = await system.request(title=f"r{i}")
        if i % 3 == 0:
            await system.client.send(
                "approve",
                {"approval_id": approval["id"], "approver": "user:a", "digest": approval["digest"]},
            )
        elif i % 3 == 1:
            await system.client.send(
                "cancel", {"approval_id": approval["id"], "by": REQUEST["requested_by"]}
            )
        elif i % 2 == 1:
            await system.client.send(
                "reject",
                {"approval_id": approval["id"], "approver": "user:a", "reason": f"no {i}",
                 "rerun": i % 4 == 1},
            )  # fmt: skip
            rejected[UUID(approval["id"])] = (f"no {i}", i % 4 == 1)
    app = system.commands.app
    live = system.projection.view
    assert app is not None
    assert live is not None
    last = app.last_notification_id()
    await eventually(lambda: _at(live.position, last))
    from_store, from_stream = _fresh_views(system.settings, tmp_path)
    assert rebuild.from_store(app, from_store) == last
    nc = await nats.connect(system.settings.nats_url)
    try:
        assert await rebuild.from_stream(nc.jetstream(), from_stream) == last
    finally:
        await nc.close()
    assert from_store.content_hash() == from_stream.content_hash() == live.content_hash()
    assert (
        from_store.count("acme")
        == live.count("acme")
        == {"approved": 10, "cancelled": 10, "pending": 5, "rejected": 5}
    )
    # Check every build holds each rejection's reason and rerun (some asked for one, some not).
    assert {True, False} == {rerun for _, rerun in rejected.values()}
    for view in (from_store, from_stream, live):
        rows = {i: view.get("acme", i) for i in rejected}
        assert {i: (row.reason, row.rerun) for i, row in rows.items()} == rejected


async def _at(position: Callable[[], int], target: int) -> bool:
    return await asyncio.to_thread(position) >= target


def _fresh_views(settings: Settings, tmp_path: Any) -> tuple[Any, Any]:
    if settings.store == "sqlite":
        return (
            open_view(settings, sqlite_path=tmp_path / "from-store.db"),
            open_view(settings, sqlite_path=tmp_path / "from-stream.db"),
        )
    schema = settings.postgres_schema
    return (
        open_view(msgspec.structs.replace(settings, view_postgres_schema=f"{schema}_store")),
        open_view(msgspec.structs.replace(settings, view_postgres_schema=f"{schema}_stream")),
    )


async def test_a_wait_open_when_the_projection_stops_is_answered_at_once(
    settings: Settings, nats_server: NatsServer
) -> None:
    settings = msgspec.structs.replace(settings, nats_url=nats_server.url)
    async with CommandService(settings):
        projection = ProjectionService(settings)
        await projection.start()
        client = await ApprovalsClient.connect(nats_server.url, "acme", reply_timeout=10.0)
        try:
            await configure_over_nats(client.nc)
            requested = await client.send("request", REQUEST)
            assert requested.approval is not None, requested.error
            seen = await client.nc.subscribe("approvals.query.acme.wait", max_msgs=1)
            body = msgspec.json.encode({"approval_id": requested.approval.id, "timeout_s": 120})
            waiting = asyncio.create_task(
                client.nc.request("approvals.query.acme.wait", body, timeout=130)
            )
            await seen.next_msg(timeout=10)  # the wait is on the bus: it is open
            # Check: stopping the projection answers the open wait (retry elsewhere), not at 120 s.
            await projection.stop()
            answered = msgspec.json.decode((await asyncio.wait_for(waiting, 15)).data)
            assert answered["ok"] is False
            assert answered["error"]["code"] == "unavailable"
        finally:
            await client.close()


async def test_an_answer_instead_of_a_decision_reaches_wait_get_list_and_count(
    system: System,
) -> None:
    approval = await system.request()
    waiting = asyncio.create_task(
        system.ask("wait", {"approval_id": approval["id"], "timeout_s": 20})
    )
    await asyncio.sleep(0)  # let the wait go out before the answer
    reply = await system.client.send(
        "respond",
        {"approval_id": approval["id"], "approver": "user:bo", "message": "which 40 contacts?"},
    )
    assert (reply.ok, reply.outcome) == (True, "responded"), reply.error
    # Check the wait ends on the answer: terminal, with the message as the reason.
    answered = await asyncio.wait_for(waiting, 15)
    answer = ("responded", "which 40 contacts?", False)
    assert (_rejection(answered["approval"]), answered["timed_out"]) == (answer, False)
    # Check get, the status filter of list and count show it.
    got = await system.ask("get", {"approval_id": approval["id"]})
    assert _rejection(got["approval"]) == answer
    assert got["approval"]["decided_by"] == "user:bo"
    listed = await system.ask("list", {"status": "responded"})
    assert [item["id"] for item in listed["items"]] == [approval["id"]]
    counted = await system.ask("count", {})
    assert counted["counts"] == {"responded": 1}
