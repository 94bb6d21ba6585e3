"""The status view's contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import msgspec
import pytest

from approvals.projections.status.bulk import project_in_bulk
from approvals.projections.status.storage import open_view
from approvals.projections.status.view import ADDED_COLUMNS, StatusView
from approvals.schemas import commands, queries
from approvals.schemas.codec import event_decoder
from approvals.schemas.workspace import WorkspaceSettings
from approvals.services.approvals.application import Approvals
from approvals.services.approvals.store import store_env

if TYPE_CHECKING:
    from approvals.projections.status.view import Projected
    from approvals.services.runtime.settings import Settings
from tests.workspaces import ADMIN, SETTINGS, configure


def a_request(title: str = "Sync 40 contacts", **changes: object) -> commands.Request:
    fields: dict[str, object] = {
        "requested_by": "service:enricher",
        "skill_name": "crm-sync",
        "skill_execution_id": "exec-1",
        "title": title,
        "summary": "Writes 40 contacts to HubSpot",
        "risk_level": "high",
        "action": commands.Action(kind="crm_write", mode="live", max_credits=40.0),
    }
    fields.update(changes)
    return commands.Request(**fields)  # type: ignore[arg-type]


@pytest.fixture
def app(settings: Settings) -> Approvals:
    application = Approvals(store_env(settings))
    configure(application)
    return application


@pytest.fixture
def view(settings: Settings) -> StatusView:
    return open_view(settings)


def stored(app: Approvals, after: int = 0) -> list[Projected]:
    return [
        (n.id, event_decoder.decode(n.state), n.state)
        for n in app.notifications(after + 1, 100_000)
    ]


def test_projects_a_lifecycle_and_records_its_position(app: Approvals, view: StatusView) -> None:
    # Check a request, a delivery and an approval make one row and a three-entry timeline.
    requested = app.handle("acme", a_request())
    assert requested.approval is not None
    approval_id = requested.approval.id
    app.handle("acme", commands.Deliver(approval_id=approval_id, channel="slack", target="#ops"))
    app.handle(
        "acme",
        commands.Approve(
            approval_id=approval_id, approver="user:ana", digest=requested.approval.request.digest
        ),
    )
    changed = view.project(stored(app))
    assert set(changed) == {approval_id}
    row = view.get("acme", approval_id)
    assert row is not None
    assert (row.status, row.version, row.decided_by) == ("approved", 3, "user:ana")
    assert row.channels == ("slack",)
    assert row.resolved_at is not None
    assert view.position() == app.last_notification_id()
    history = view.history("acme", approval_id)
    assert history is not None
    assert [(e.version, e.type) for e in history] == [
        (1, "requested"),
        (2, "delivered"),
        (3, "approved"),
    ]
    # Check the row belongs to its workspace only.
    assert view.get("other", approval_id) is None
    assert view.history("other", approval_id) is None


def test_a_batch_folds_onto_rows_it_requests_itself_and_rows_already_written(
    app: Approvals, view: StatusView
) -> None:
    # Check an approval requested in an earlier batch is read back from the table, and one
    # requested in the same batch is folded in memory: both end approved at version 2.
    first = app.handle("acme", a_request("earlier"))
    view.project(stored(app))
    after = view.position()
    second = app.handle("acme", a_request("same batch"))
    approvals = [made.approval for made in (first, second)]
    for approval in approvals:
        assert approval is not None
        decide = commands.Approve(
            approval_id=approval.id, approver="user:ana", digest=approval.request.digest
        )
        app.handle("acme", decide)
    changed = project_in_bulk(view, stored(app, after))
    assert set(changed) == {a.id for a in approvals if a is not None}
    for approval, title in zip(approvals, ("earlier", "same batch"), strict=True):
        assert approval is not None
        row = view.get("acme", approval.id)
        assert row is not None
        assert (row.title, row.status, row.version) == (title, "approved", 2)
    # Check the garbage collector runs again after a bulk batch, and stays off if it was off.
    assert gc.isenabled()
    gc.disable()
    try:
        project_in_bulk(view, stored(app, after))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_redelivered_batch_changes_nothing(app: Approvals, view: StatusView) -> None:
    app.handle_batch([("acme", a_request(f"r{i}")) for i in range(20)])
    events = stored(app)
    view.project(events)
    before = view.content_hash()
    # Check the same batch, part of it, and a duplicated event are all skipped.
    assert view.project(events) == {}
    assert view.project(events[5:9]) == {}
    assert view.project([events[3], events[3]]) == {}
    assert view.content_hash() == before
    assert view.count("acme") == {"pending": 20}


def test_list_pages_newest_first_and_is_stable_under_inserts(
    app: Approvals, view: StatusView
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(7):
        app.handle("acme", a_request(f"r{i}"), now=start + timedelta(minutes=i))
    view.project(stored(app))
    first, cursor = view.list_page("acme", queries.List(limit=3))
    assert [v.title for v in first] == ["r6", "r5", "r4"]
    assert cursor is not None
    # Check a newer approval arriving between pages does not shift the next page.
    position = view.position()
    app.handle("acme", a_request("newer"), now=start + timedelta(hours=1))
    view.project(stored(app, position))
    second, cursor = view.list_page("acme", queries.List(limit=3, cursor=cursor))
    assert [v.title for v in second] == ["r3", "r2", "r1"]
    third, cursor = view.list_page("acme", queries.List(limit=3, cursor=cursor))
    assert [v.title for v in third] == ["r0"]
    assert cursor is None


def test_list_filters_and_count(app: Approvals, view: StatusView) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    low = app.handle("acme", a_request("low", risk_level="low"), now=start)
    app.handle(
        "acme", a_request("by bot", requested_by="service:bot"), now=start + timedelta(hours=1)
    )
    app.handle("acme", a_request("other skill", skill_name="s2"), now=start + timedelta(hours=2))
    assert low.approval is not None
    app.handle(
        "acme",
        commands.Reject(approval_id=low.approval.id, approver="user:ana"),
        now=start + timedelta(hours=3),
    )
    view.project(stored(app))

    def titles(**filters: object) -> list[str]:
        items, _ = view.list_page("acme", queries.List(**filters))  # type: ignore[arg-type]
        return [v.title for v in items]

    assert titles(status="rejected") == ["low"]
    assert titles(risk_level="low") == ["low"]
    assert titles(requested_by="service:bot") == ["by bot"]
    assert titles(skill_name="s2") == ["other skill"]
    assert titles(created_after=start + timedelta(minutes=30)) == ["other skill", "by bot"]
    assert titles(created_before=start + timedelta(minutes=30)) == ["low"]
    assert view.count("acme") == {"pending": 2, "rejected": 1}
    assert view.count("acme", "pending") == {"pending": 2}
    assert view.count("nobody") == {}


def test_a_cursor_it_did_not_make_is_refused(view: StatusView) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        view.list_page("acme", queries.List(cursor="bm90IGEgY3Vyc29y"))


def test_due_lists_pending_approvals_past_their_deadline(app: Approvals, view: StatusView) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    soon = app.handle("acme", a_request("soon", expires_in_s=60), now=now)
    app.handle("acme", a_request("later", expires_in_s=3600), now=now)
    view.project(stored(app))
    assert soon.approval is not None
    assert view.due(now + timedelta(seconds=59)) == []
    assert view.due(now + timedelta(seconds=61)) == [("acme", soon.approval.id)]


def test_waiting_reads_the_oldest_pending_approvals_through_its_index(
    app: Approvals, view: StatusView, settings: Settings
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    made = [
        app.handle("acme", a_request(f"#{i}"), now=now + timedelta(minutes=3 - i)).approval
        for i in range(4)
    ]
    assert all(approval is not None for approval in made)
    decided = made[2]
    assert decided is not None
    reject = commands.Reject(approval_id=decided.id, approver="user:ana")
    app.handle("acme", reject, now=now + timedelta(minutes=5))
    view.project(stored(app))
    # Check: pending only, oldest first, as many as asked, with what reminders go by.
    waiting = view.waiting(limit=2)
    assert [w.id for w in waiting] == [made[3].id, made[1].id]  # type: ignore[union-attr]
    assert waiting[0].created_at == now
    assert (waiting[0].workspace_id, waiting[0].reminders, waiting[0].escalated_to) == (
        "acme", 0, None,
    )  # fmt: skip
    assert [w.id for w in view.waiting()] == [made[i].id for i in (3, 1, 0)]  # type: ignore[union-attr]
    if settings.store == "sqlite":
        # Check: an index range, not every row sorted (each tick reads it, views grow large).
        with view._transaction(commit=False) as cursor:
            cursor.execute(
                f"EXPLAIN QUERY PLAN SELECT workspace_id, id, created_at, reminders, escalated_to "
                f"FROM {view.approvals_table} WHERE status = 'pending' ORDER BY created_at LIMIT 5"
            )
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
        assert "status_approvals_waiting" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


def test_a_view_made_before_quorum_and_votes_is_upgraded_in_place(
    app: Approvals, settings: Settings
) -> None:
    # Check: a table of the first release (without the added columns) is upgraded on opening.
    old = open_view(settings)
    with old._transaction(commit=True) as cursor:
        for column in ADDED_COLUMNS:
            cursor.execute(f"ALTER TABLE {old.approvals_table} DROP COLUMN {column}")
    view = open_view(settings)
    two = msgspec.structs.replace(SETTINGS, quorum={"high": 2})
    configure_again(app, two)
    requested = app.handle("acme", a_request())
    assert requested.approval is not None
    approval = requested.approval
    vote = commands.Approve(approval_id=approval.id, approver="user:ana",
                            digest=approval.request.digest)  # fmt: skip
    assert app.handle("acme", vote).outcome == "vote_cast"
    view.project(stored(app))
    row = view.get("acme", approval.id)
    assert row is not None
    assert (row.status, row.quorum, row.votes) == ("pending", 2, ("user:ana",))


def configure_again(app: Approvals, settings: WorkspaceSettings) -> None:
    reply = app.handle("acme", commands.Configure(settings=settings, by=ADMIN))
    assert reply.outcome == "configured"


def test_a_view_made_before_rerun_is_upgraded_with_the_rejections_it_holds(
    app: Approvals, settings: Settings
) -> None:
    # Check: a view that projected rejections before it had a rerun column gets the column, and
    # each row's value is taken from the rejection in its timeline, not left at the default.
    old = open_view(settings)
    asked_again, final = (app.handle("acme", a_request(t)).approval for t in ("again", "final"))
    assert asked_again is not None
    assert final is not None
    for approval, rerun in ((asked_again, True), (final, False)):
        app.handle("acme", commands.Reject(approval_id=approval.id, approver="user:ana",
                                           reason="wrong list", rerun=rerun))  # fmt: skip
    old.project(stored(app))
    with old._transaction(commit=True) as cursor:
        cursor.execute(f"ALTER TABLE {old.approvals_table} DROP COLUMN rerun")
    view = open_view(settings)
    rows = [view.get("acme", a.id) for a in (asked_again, final)]
    assert [(r.status, r.reason, r.rerun) for r in rows if r is not None] == [
        ("rejected", "wrong list", True),
        ("rejected", "wrong list", False),
    ]
    # Check: the upgraded view equals one built afresh from the same events.
    if settings.store == "sqlite":
        fresh = open_view(settings, sqlite_path=settings.view_sqlite_path.with_name("fresh.db"))
    else:
        schema = f"{settings.postgres_schema}_fresh"
        fresh = open_view(msgspec.structs.replace(settings, view_postgres_schema=schema))
    fresh.project(stored(app))
    assert fresh.content_hash() == view.content_hash()
