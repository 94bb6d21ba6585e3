"""The status view: SQL shared by the SQLite and PostgreSQL backends.

Each batch of events changes the view rows and records the position (eventsourcing's tracking
row) in one transaction. Events at or below the recorded position are skipped, so a redelivered
or duplicated event changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID

import msgspec
from eventsourcing.persistence import TrackingRecorder

from approvals.projections.status.rows import fold
from approvals.schemas.codec import encoder, event_decoder
from approvals.schemas.events import Event, Requested
from approvals.schemas.queries import ApprovalView, TimelineEntry

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from contextlib import AbstractContextManager

    from approvals.projections.status.bulk import BulkWriter
    from approvals.schemas import queries
    from approvals.schemas.events import AnyEvent

Projected = tuple[int, "AnyEvent", bytes]  # notification id, event, the event's JSON as stored

UPSTREAM = "approvals"  # the application whose notification ids the position counts

COLUMNS = (
    "id", "workspace_id", "status", "title", "summary", "risk_level", "requested_by",
    "on_behalf_of", "skill_name", "skill_execution_id", "action_kind", "mode", "provider",
    "destination", "max_credits", "digest", "channels", "decided_by", "reason", "created_at",
    "expires_at", "resolved_at", "version", "quorum", "votes", "redeemed_at", "credits_used",
    "redeem_by", "spend", "receipt", "reminders", "escalated_to", "rerun",
    "action", "proposed_payload", "payload_schema", "approved_digest", "approved_action",
    "approved_payload", "changes",
)  # fmt: skip
# Columns added after the first release, with what an older table gets when it is upgraded.
ADDED_COLUMNS = {
    "quorum": "INTEGER NOT NULL DEFAULT 1",
    "votes": "TEXT NOT NULL DEFAULT '[]'",
    "redeemed_at": "TEXT",
    "credits_used": "DOUBLE PRECISION",
    "redeem_by": "TEXT",
    "spend": "TEXT",
    "receipt": "TEXT",
    "reminders": "INTEGER NOT NULL DEFAULT 0",
    "escalated_to": "TEXT",
    "rerun": "INTEGER NOT NULL DEFAULT 0",  # 1: the rejection asks for a new request
    # Approve with edits: the request's action and payload, the version approved (or being
    # voted on) and how it differs; an upgraded table refolds them from its timeline.
    "action": "TEXT",
    "proposed_payload": "TEXT",
    "payload_schema": "TEXT",
    "approved_digest": "TEXT",
    "approved_action": "TEXT",
    "approved_payload": "TEXT",
    "changes": "TEXT NOT NULL DEFAULT '[]'",
}
# A value as JSON text, or NULL (None)
JSON_COLUMNS = (
    "spend", "receipt", "action", "proposed_payload", "payload_schema", "approved_action",
    "approved_payload",
)  # fmt: skip
INTEGER_COLUMNS = frozenset({"version", "quorum", "reminders", "rerun"})
REAL_COLUMNS = frozenset({"max_credits", "credits_used"})


def create_statements(approvals: str, timeline: str, real: str) -> list[str]:
    columns = ", ".join(
        f"{c} {real if c in REAL_COLUMNS else 'INTEGER' if c in INTEGER_COLUMNS else 'TEXT'}"
        for c in COLUMNS
    )
    return [
        f"CREATE TABLE IF NOT EXISTS {approvals} ({columns}, PRIMARY KEY (id))",
        f"CREATE INDEX IF NOT EXISTS {approvals.split('.')[-1]}_by_created "
        f"ON {approvals} (workspace_id, created_at DESC, id DESC)",
        f"CREATE INDEX IF NOT EXISTS {approvals.split('.')[-1]}_by_status "
        f"ON {approvals} (workspace_id, status, created_at DESC, id DESC)",
        f"CREATE INDEX IF NOT EXISTS {approvals.split('.')[-1]}_due "
        f"ON {approvals} (status, expires_at)",
        f"CREATE INDEX IF NOT EXISTS {approvals.split('.')[-1]}_waiting "
        f"ON {approvals} (status, created_at)",
        f"CREATE TABLE IF NOT EXISTS {timeline} (approval_id TEXT, version INTEGER, "
        "notification_id INTEGER, type TEXT, actor TEXT, occurred_at TEXT, event TEXT, "
        "PRIMARY KEY (approval_id, version))",
    ]


def timestamp(value: datetime) -> str:
    """Fixed-width UTC text, so text order is time order on both backends.

    The view writes three or four per event: msgspec writes a UTC time (as RFC 3339, ``Z``)
    four times faster than ``isoformat``. Whole seconds (no fraction from msgspec), other
    offsets and naive times go the slow way."""
    text = encoder.encode(value)
    if len(text) == _UTC_MICROSECONDS and text.endswith(b'Z"'):
        return text[1:-2].decode() + "+00:00"
    if value.tzinfo is not UTC and value.utcoffset() != _ZERO:  # msgspec decodes Z as UTC
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


_ZERO = timedelta(0)
_UTC_MICROSECONDS = len(b'"2026-12-01T17:50:54.177100Z"')


class Waiting(NamedTuple):
    """A pending approval as the reminder scheduler reads it."""

    workspace_id: str
    id: UUID
    created_at: datetime
    reminders: int
    escalated_to: str | None


class StatusView(TrackingRecorder, ABC):
    approvals_table = "status_approvals"
    timeline_table = "status_timeline"
    placeholder = "?"

    @abstractmethod
    def _transaction(self, *, commit: bool) -> AbstractContextManager[Any]: ...

    @abstractmethod
    def _position(self, cursor: Any) -> int: ...

    @abstractmethod
    def _record_position(self, cursor: Any, notification_id: int) -> None: ...

    # Batches up to this many events are written on the event loop (0: always in a thread).
    small_batch = 0

    def bulk_writer(self) -> BulkWriter | None:
        """What writes the projector's big batches in a process of its own (None: a thread)."""
        return None

    def sync(self) -> None:
        """Make what ``project`` committed durable (it is visible to readers already).

        The projector calls it after waking the waiters and before acknowledging the batch, so
        a waiting caller is not kept waiting for the disk, and nothing is acknowledged that a
        power loss could take back. PostgreSQL's commit is durable by itself: nothing to do."""

    def _sql(self, text: str) -> str:
        text = text.format(a=self.approvals_table, t=self.timeline_table)
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    # -- writes --------------------------------------------------------------------------

    def project(self, batch: Sequence[Projected]) -> dict[UUID, ApprovalView]:
        """Apply events (with notification ids and stored JSON, in order); return changed rows."""
        with self._transaction(commit=True) as cursor:
            position = self._position(cursor)
            everything = [item for item in batch if item[0] > position]
            if not everything:
                return {}
            # A workspace's settings move the position but no approval row.
            fresh = [(nid, e, raw) for nid, e, raw in everything if isinstance(e, Event)]
            rows = self._select(cursor, _to_read(fresh))
            changed: dict[UUID, ApprovalView] = {}
            for _, event, _ in fresh:
                row = fold(rows.get(event.approval_id), event)
                if row is not None and row is not rows.get(event.approval_id):
                    rows[event.approval_id] = changed[event.approval_id] = row
            self._upsert(cursor, changed.values())
            cursor.executemany(
                self._sql("INSERT INTO {t} VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"),
                [
                    (str(e.approval_id), e.version, nid, e.event_type, e.actor,
                     timestamp(e.occurred_at), raw.decode())
                    for nid, e, raw in fresh
                ],
            )  # fmt: skip
            self._record_position(cursor, everything[-1][0])
            return changed

    def _refold(self, cursor: Any) -> None:
        """Every row again from the events in the view's own timeline.

        A table an earlier release made gets the columns added since with a default, which is
        wrong for rows whose events say otherwise (a rejection that asked for a rerun): folding
        the timeline again makes the upgraded view what a rebuild from the events would be.
        """
        cursor.execute(self._sql("SELECT event FROM {t} ORDER BY approval_id, version"))
        rows: dict[UUID, ApprovalView | None] = {}
        for record in cursor.fetchall():
            event = event_decoder.decode(record["event"])
            if isinstance(event, Event):
                rows[event.approval_id] = fold(rows.get(event.approval_id), event)
        self._upsert(cursor, [row for row in rows.values() if row is not None])

    def _select(self, cursor: Any, ids: set[UUID]) -> dict[UUID, ApprovalView]:
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        cursor.execute(
            self._sql(f"SELECT * FROM {{a}} WHERE id IN ({marks})"), [str(i) for i in ids]
        )
        return {view.id: view for view in map(_from_row, cursor.fetchall())}

    def _upsert(self, cursor: Any, rows: Any) -> None:
        # Never back: an upgrade folding the timeline again while another process projects
        # must not put an older row over a newer one.
        updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
        marks = ", ".join("?" * len(COLUMNS))
        cursor.executemany(
            self._sql(
                f"INSERT INTO {{a}} ({', '.join(COLUMNS)}) VALUES ({marks}) "
                f"ON CONFLICT (id) DO UPDATE SET {updates} WHERE {{a}}.version <= excluded.version"
            ),
            [_to_row(row) for row in rows],
        )

    # -- reads ---------------------------------------------------------------------------

    def position(self) -> int:
        with self._transaction(commit=False) as cursor:
            return self._position(cursor)

    def get(self, workspace_id: str, approval_id: UUID) -> ApprovalView | None:
        rows = self._fetch(
            "SELECT * FROM {a} WHERE id = ? AND workspace_id = ?", [str(approval_id), workspace_id]
        )
        return _from_row(rows[0]) if rows else None

    def list_page(
        self, workspace_id: str, query: queries.List
    ) -> tuple[list[ApprovalView], str | None]:
        where, params = ["workspace_id = ?"], [workspace_id]
        for column in ("status", "risk_level", "skill_name", "requested_by"):
            if (value := getattr(query, column)) is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.created_after is not None:
            where.append("created_at > ?")
            params.append(timestamp(query.created_after))
        if query.created_before is not None:
            where.append("created_at < ?")
            params.append(timestamp(query.created_before))
        oldest = query.order == "oldest"
        if query.cursor is not None:
            where.append(f"(created_at, id) {'>' if oldest else '<'} (?, ?)")
            params.extend(decode_cursor(query.cursor))
        direction = "ASC" if oldest else "DESC"
        rows = self._fetch(
            f"SELECT * FROM {{a}} WHERE {' AND '.join(where)} "
            f"ORDER BY created_at {direction}, id {direction} LIMIT ?",
            [*params, query.limit + 1],
        )
        items = [_from_row(row) for row in rows[: query.limit]]
        more = len(rows) > query.limit
        return items, encode_cursor(items[-1]) if more else None

    def count(self, workspace_id: str, status: str | None = None) -> dict[str, int]:
        where, params = "workspace_id = ?", [workspace_id]
        if status is not None:
            where, params = f"{where} AND status = ?", [*params, status]
        rows = self._fetch(
            f"SELECT status, COUNT(*) AS n FROM {{a}} WHERE {where} GROUP BY status", params
        )
        return {row["status"]: int(row["n"]) for row in rows}

    def history(self, workspace_id: str, approval_id: UUID) -> list[TimelineEntry] | None:
        if self.get(workspace_id, approval_id) is None:
            return None
        rows = self._fetch(
            "SELECT * FROM {t} WHERE approval_id = ? ORDER BY version", [str(approval_id)]
        )
        return [
            TimelineEntry(
                version=row["version"],
                type=row["type"],
                actor=row["actor"],
                occurred_at=datetime.fromisoformat(row["occurred_at"]),
                notification_id=row["notification_id"],
                event=msgspec.json.decode(row["event"]),
            )
            for row in rows
        ]

    def due(self, now: datetime, limit: int = 500) -> list[tuple[str, UUID]]:
        """Pending approvals whose deadline has passed: (workspace, id), oldest deadline first."""
        rows = self._fetch(
            "SELECT workspace_id, id FROM {a} WHERE status = 'pending' AND expires_at <= ? "
            "ORDER BY expires_at LIMIT ?",
            [timestamp(now), limit],
        )
        return [(row["workspace_id"], _uuid(row["id"])) for row in rows]

    def waiting(self, limit: int = 1000) -> list[Waiting]:
        """Pending approvals, oldest first: what reminders and escalation look at, every tick.

        Only the columns they go by, read through the ``waiting`` index: on a view of a hundred
        thousand pending approvals a tick reads ``limit`` index entries, not every row sorted."""
        rows = self._fetch(
            "SELECT workspace_id, id, created_at, reminders, escalated_to FROM {a} "
            "WHERE status = 'pending' ORDER BY created_at LIMIT ?",
            [limit],
        )
        return [
            Waiting(
                workspace_id=row["workspace_id"],
                id=_uuid(row["id"]),
                created_at=datetime.fromisoformat(row["created_at"]),
                reminders=row["reminders"],
                escalated_to=row["escalated_to"],
            )
            for row in rows
        ]

    def pending(self) -> dict[str, tuple[int, datetime]]:
        """Per workspace: how many approvals wait for a decision, and when the oldest was asked."""
        rows = self._fetch(
            "SELECT workspace_id, COUNT(*) AS n, MIN(created_at) AS oldest FROM {a} "
            "WHERE status = 'pending' GROUP BY workspace_id",
            [],
        )
        return {
            row["workspace_id"]: (int(row["n"]), datetime.fromisoformat(row["oldest"]))
            for row in rows
        }

    def content_hash(self) -> str:
        """SHA-256 over every view row and timeline entry, in a fixed order."""
        digest = hashlib.sha256()
        for row in self._iterate("SELECT * FROM {a} ORDER BY id"):
            digest.update(encoder.encode([row[c] for c in COLUMNS]))
        for row in self._iterate("SELECT * FROM {t} ORDER BY approval_id, version"):
            digest.update(encoder.encode([row[c] for c in row.keys()]))  # noqa: SIM118
        return digest.hexdigest()

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self._transaction(commit=False) as cursor:
            cursor.execute(self._sql(sql), params)
            return list(cursor.fetchall())

    def _iterate(self, sql: str) -> Iterator[Any]:
        yield from self._fetch(sql, [])


def _to_read(fresh: Sequence[Projected]) -> set[UUID]:
    """The approvals whose rows the batch needs from the table: not those it requests itself.

    An approval requested in this batch has no row yet (its events come after its request, and
    the position skips what was applied before), so its later events fold onto the new row."""
    later = {e.approval_id for _, e, _ in fresh if e.version > 1}  # type: ignore[union-attr]
    return later - {e.approval_id for _, e, _ in fresh if isinstance(e, Requested)}


def _uuid(value: str) -> UUID:
    return UUID(value)


def _to_row(view: ApprovalView) -> tuple[Any, ...]:
    # Written once per changed row of every batch: the common values (no channels, votes or
    # changes yet; the approved action the request's own) without encoding them again.
    action = _json_text(view.action)
    approved_action = (
        action if view.approved_action is view.action else _json_text(view.approved_action)
    )
    return (
        str(view.id), view.workspace_id, view.status, view.title, view.summary, view.risk_level,
        view.requested_by, view.on_behalf_of, view.skill_name, view.skill_execution_id,
        view.action_kind, view.mode, view.provider, view.destination, view.max_credits,
        view.digest, _list_text(view.channels), view.decided_by, view.reason,
        timestamp(view.created_at), timestamp(view.expires_at),
        None if view.resolved_at is None else timestamp(view.resolved_at), view.version,
        view.quorum, _list_text(view.votes),
        None if view.redeemed_at is None else timestamp(view.redeemed_at), view.credits_used,
        None if view.redeem_by is None else timestamp(view.redeem_by),
        None if view.spend is None else encoder.encode(view.spend).decode(),
        None if view.receipt is None else encoder.encode(view.receipt).decode(),
        view.reminders, view.escalated_to, int(view.rerun), action,
        _json_text(view.proposed_payload), _json_text(view.payload_schema), view.approved_digest,
        approved_action, _json_text(view.approved_payload), _list_text(view.changes),
    )  # fmt: skip


def _list_text(values: tuple[Any, ...]) -> str:
    return encoder.encode(values).decode() if values else "[]"


def _json_text(value: Any) -> str | None:
    return None if value is None else encoder.encode(value).decode()


def _from_row(row: Any) -> ApprovalView:
    values = {c: row[c] for c in COLUMNS}
    values["channels"] = msgspec.json.decode(values["channels"])
    values["votes"] = msgspec.json.decode(values["votes"])
    values["changes"] = msgspec.json.decode(values["changes"] or "[]")
    for column in JSON_COLUMNS:
        if values[column] is not None:
            values[column] = msgspec.json.decode(values[column])
    return msgspec.convert(values, ApprovalView, strict=False)


def encode_cursor(view: ApprovalView) -> str:
    raw = f"{timestamp(view.created_at)}|{view.id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    """Raises ValueError for a cursor this view did not make."""
    try:
        created_at, approval_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        datetime.fromisoformat(created_at)
        _uuid(approval_id)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"not a cursor of this list: {cursor!r}") from error
    return created_at, approval_id
