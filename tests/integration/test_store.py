"""The Approvals application against its store: one contract, run on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4, uuid5

import pytest

from approvals.schemas import commands
from approvals.schemas.digest import action_digest
from approvals.services.approvals.application import IDEMPOTENCY_NAMESPACE, Approvals, Result, State
from approvals.services.approvals.errors import AlreadyDecided, ApprovalError, Conflict, NotFound
from approvals.services.approvals.store import store_env
from approvals.services.runtime.settings import Settings
from tests.workspaces import approval_notifications, configure

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from approvals.services.approvals.domain import Approval

ACTION = commands.Action(kind="crm_write", mode="live", max_credits=40.0)


def a_request(**changes: Any) -> commands.Request:
    fields: dict[str, Any] = {
        "requested_by": "service:enricher",
        "skill_name": "crm-sync",
        "skill_execution_id": "exec-1",
        "title": "Sync 40 contacts to HubSpot",
        "summary": "Writes 40 contacts",
        "risk_level": "high",
        "action": ACTION,
    }
    fields.update(changes)
    return commands.Request(**fields)


def an_approve(approval: Approval, approver: str = "user:ana") -> commands.Approve:
    return commands.Approve(
        approval_id=approval.id, approver=approver, digest=approval.request.digest
    )


def requested(result: Result | ApprovalError) -> Approval:
    assert isinstance(result, Result), result
    assert result.outcome == "approval_required"
    assert result.approval is not None
    return result.approval


def versions_stored(app: Approvals) -> list[int]:
    """The versions of every stored approval event (PostgreSQL ids may have gaps after a
    conflict; the workspaces' settings left out)."""
    return [n.originator_version for n in approval_notifications(app)]


@pytest.fixture
def open_app(store_environment: dict[str, str]) -> Iterator[Callable[[], Approvals]]:
    """Opens Approvals instances on the test's store; closes them all afterwards."""
    opened: list[Approvals] = []

    def open_one() -> Approvals:
        opened.append(Approvals(store_environment))
        if len(opened) == 1:
            configure(opened[0])
        return opened[-1]

    yield open_one
    for app in opened:
        app.close()


@pytest.fixture
def app(open_app: Callable[[], Approvals]) -> Approvals:
    return open_app()


def test_round_trip_reloads_the_same_state_in_a_new_instance(
    app: Approvals, open_app: Callable[[], Approvals]
) -> None:
    # Check a request makes a pending approval at version 1.
    approval = requested(app.handle("acme", a_request()))
    assert (approval.status, approval.version, approval.workspace_id) == ("pending", 1, "acme")
    assert approval.request.digest == action_digest(ACTION, None)
    # Check an approval decides it at version 2.
    approved = app.handle("acme", an_approve(approval))
    assert approved.outcome == "approved"
    assert approved.approval is not None
    assert (approved.approval.status, approved.approval.version) == ("approved", 2)
    assert approved.approval.decided_by == "user:ana"
    # Check a new instance on the same store loads exactly the same state.
    reloaded = open_app().get(approval.id, "acme")
    assert reloaded == approved.approval
    assert app.get(approval.id) == reloaded


def test_stored_topics_keep_their_names_from_before_the_import_root(
    app: Approvals, open_app: Callable[[], Approvals]
) -> None:
    """Events are stored as ``schemas.events:<Class>`` as they were before the folders were
    installed under ``approvals``, so a store written by an earlier release and one written now
    hold one set of topics (and a filter by topic finds both)."""
    approval = requested(app.handle("acme", a_request()))
    app.handle("acme", an_approve(approval))
    topics = [n.topic for n in app.notifications(1, 1_000_000)]
    assert topics[-2:] == ["schemas.events:Requested", "schemas.events:Approved"]
    # Check: the workspace's settings, found by their stored topic, still govern a new instance.
    assert open_app().handle("acme", a_request(skill_execution_id="again")).outcome == (
        "approval_required"
    )


def test_a_batch_of_50_requests_writes_50_consecutive_notifications_in_one_save(
    app: Approvals,
) -> None:
    before = app.last_notification_id()
    saves = 0
    insert_events = app.recorder.insert_events

    def counting_insert(*args: Any, **kwargs: Any) -> Any:
        nonlocal saves
        saves += 1
        return insert_events(*args, **kwargs)

    app.recorder.insert_events = counting_insert  # type: ignore[method-assign]
    handled = app.handle_batch([("acme", a_request(skill_execution_id=f"e{i}")) for i in range(50)])
    assert saves == 1
    ids = {requested(result).id for result in handled.results}
    assert len(ids) == 50
    assert handled.last_notification_id == before + 50
    assert app.last_notification_id() == before + 50
    notifications = app.notifications(before + 1, 100)
    assert [n.id for n in notifications] == list(range(before + 1, before + 51))
    assert {n.originator_id for n in notifications} == ids
    assert {n.originator_version for n in notifications} == {1}


def test_a_batch_carries_state_from_a_request_to_a_later_approve(app: Approvals) -> None:
    # The approval id of a keyed request is known before it is stored.
    approval_id = uuid5(IDEMPOTENCY_NAMESPACE, "acme\x00batch-key")
    approve = commands.Approve(
        approval_id=approval_id, approver="user:ana", digest=action_digest(ACTION, None)
    )
    handled = app.handle_batch(
        [
            ("acme", a_request(idempotency_key="batch-key")),
            ("acme", approve),
            ("acme", commands.Cancel(approval_id=approval_id, by="user:bo")),
        ]
    )
    first, second, third = handled.results
    assert requested(first).id == approval_id
    assert isinstance(second, Result)
    assert second.approval is not None
    assert (second.outcome, second.approval.version) == ("approved", 2)
    # Check the third command saw the approval of the second, not the stored state.
    assert isinstance(third, AlreadyDecided)
    assert handled.last_notification_id == app.last_notification_id()
    assert len(approval_notifications(app)) == 2
    assert app.get(approval_id).status == "approved"


def test_a_replayed_idempotency_key_returns_the_same_approval_and_stores_nothing(
    app: Approvals,
) -> None:
    first = requested(app.handle("acme", a_request(idempotency_key="k-1")))
    stored = app.last_notification_id()
    again = app.handle("acme", a_request(idempotency_key="k-1", title="same action, new words"))
    assert again.replayed is True
    assert again.approval is not None
    assert again.approval.id == first.id
    assert again.approval.request.title == first.request.title
    assert app.last_notification_id() == stored


def test_an_idempotency_key_reused_for_another_action_is_a_conflict(app: Approvals) -> None:
    first = requested(app.handle("acme", a_request(idempotency_key="k-1")))
    stored = app.last_notification_id()
    other = commands.Action(kind="crm_write", mode="live", max_credits=41.0)
    with pytest.raises(Conflict) as raised:
        app.handle("acme", a_request(idempotency_key="k-1", action=other))
    assert raised.value.code == "conflict"
    assert raised.value.details["approval_id"] == str(first.id)
    assert app.last_notification_id() == stored


def test_an_idempotency_key_is_scoped_to_its_workspace(app: Approvals) -> None:
    in_acme = requested(app.handle("acme", a_request(idempotency_key="k-1")))
    in_globex = app.handle("globex", a_request(idempotency_key="k-1"))
    assert in_globex.replayed is False
    approval = requested(in_globex)
    assert approval.id != in_acme.id
    assert approval.workspace_id == "globex"
    assert len(approval_notifications(app)) == 2


def test_a_decision_on_stale_state_is_retried_and_loses_to_the_first(
    open_app: Callable[[], Approvals], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = open_app(), open_app()
    approval = requested(a.handle("acme", a_request()))
    stale = b.get(approval.id)
    # Check A approves while B still holds the pending state it read before.
    assert a.handle("acme", an_approve(approval, "user:ana")).outcome == "approved"
    loads: list[UUID] = []
    load = b._load

    def stale_first(approval_id: UUID, state: State | None = None) -> Approval | None:
        loads.append(approval_id)
        return stale if len(loads) == 1 else load(approval_id, state)

    monkeypatch.setattr(b, "_load", stale_first)
    reject = commands.Reject(approval_id=approval.id, approver="user:bo")
    handled = b.handle_batch([("acme", reject)])
    # Check B's save met the version conflict, decided again on fresh state and was refused.
    assert len(loads) == 2
    [refused] = handled.results
    assert isinstance(refused, AlreadyDecided)
    assert refused.details["decided_by"] == "user:ana"
    assert handled.last_notification_id is None
    assert versions_stored(a) == [1, 2]
    assert a.get(approval.id).status == "approved"


def test_two_instances_deciding_at_once_have_exactly_one_winner(
    open_app: Callable[[], Approvals],
) -> None:
    apps = [open_app() for _ in range(4)]
    approval = requested(apps[0].handle("acme", a_request()))
    start = threading.Barrier(len(apps))
    results: list[Result | ApprovalError] = []

    def decide(app: Approvals, approver: str) -> None:
        start.wait()
        results.extend(app.handle_batch([("acme", an_approve(approval, approver))]).results)

    threads = [
        threading.Thread(target=decide, args=(app, person))
        for person, app in zip(
            ("user:ana", "user:bo", "user:carol", "user:dave"), apps, strict=True
        )
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 4
    winners = [r for r in results if isinstance(r, Result)]
    assert [w.outcome for w in winners] == ["approved"]
    assert all(isinstance(r, AlreadyDecided) for r in results if not isinstance(r, Result))
    assert versions_stored(apps[0]) == [1, 2]


def test_an_unknown_id_is_not_found(app: Approvals) -> None:
    unknown = uuid4()
    with pytest.raises(NotFound):
        app.get(unknown)
    with pytest.raises(NotFound) as raised:
        app.handle("acme", commands.Cancel(approval_id=unknown, by="user:ana"))
    assert raised.value.code == "not_found"
    assert len(approval_notifications(app)) == 0


def test_an_approval_is_not_found_from_another_workspace(app: Approvals) -> None:
    approval = requested(app.handle("acme", a_request()))
    with pytest.raises(NotFound):
        app.get(approval.id, "globex")
    with pytest.raises(NotFound) as raised:
        app.handle("globex", an_approve(approval))
    assert raised.value.code == "not_found"
    assert app.get(approval.id, "acme").status == "pending"
    assert len(approval_notifications(app)) == 1


def test_sqlite_connections_sync_fully_in_wal_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Many SQLite builds default to FULL already: start every connection at NORMAL, as other
    # builds do, so only the store's own pragma can make the check pass.
    connect = sqlite3.connect

    def connect_normal(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection: sqlite3.Connection = connect(*args, **kwargs)
        connection.execute("PRAGMA synchronous=NORMAL;")
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect_normal)
    settings = Settings(store="sqlite", sqlite_path=tmp_path / "approvals.db")
    app = Approvals(store_env(settings))
    configure(app, "acme")
    requested(app.handle("acme", a_request()))
    pool = app.recorder.datastore.pool  # type: ignore[attr-defined]
    connections = [pool.get_connection(is_writer=writer) for writer in (True, False, False)]
    try:
        for connection in connections:
            cursor = connection.cursor()
            cursor.execute("PRAGMA synchronous;")
            assert cursor.fetchone()[0] == 2  # FULL
            cursor.execute("PRAGMA journal_mode;")
            assert cursor.fetchone()[0].lower() == "wal"
    finally:
        for connection in connections:
            pool.put_connection(connection)
        app.close()


@pytest.mark.postgres
def test_instances_starting_together_on_a_new_postgresql_schema_all_start(
    postgres_schema: str,
) -> None:
    """Replicas of a Deployment start at once: every one creates the schema, the store's tables
    and the view's, and none fails in PostgreSQL's racy CREATE ... IF NOT EXISTS."""
    from approvals.projections.status.storage import open_view
    from tests.conftest import POSTGRES_DSN

    assert POSTGRES_DSN is not None
    settings = Settings(store="postgres", postgres_dsn=POSTGRES_DSN,
                        postgres_schema=postgres_schema)  # fmt: skip
    starting = threading.Barrier(6)
    failures: list[BaseException] = []

    def start() -> None:
        try:
            starting.wait()
            app = Approvals(store_env(settings))
            view = open_view(settings)
            assert app.last_notification_id() == 0
            assert view.position() == 0
            app.close()
            view.datastore.close()  # type: ignore[attr-defined]
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
