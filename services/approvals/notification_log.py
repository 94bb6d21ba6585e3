"""Reading the store's notification log a section at a time, fast: the checkpointer seals it
with this, and the auditors (``services/audit``) replay, export and verify it.

A record has the store's notification id (the position), the aggregate id and version, and the
event's JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

from eventsourcing.sqlite import SQLiteApplicationRecorder

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from uuid import UUID

    from approvals.services.approvals.application import Approvals

SECTION = 5000  # events per read: large sections are what make replay and verify fast


class Record(Protocol):
    """The fields of eventsourcing's ``Notification`` an audit reads."""

    @property
    def id(self) -> int: ...
    @property
    def originator_id(self) -> UUID | str: ...
    @property
    def originator_version(self) -> int: ...
    @property
    def state(self) -> bytes: ...


class Row(NamedTuple):
    id: int
    originator_id: UUID | str
    originator_version: int
    state: bytes


def store_sections(
    app: Approvals, *, after: int = 0, up_to: int | None = None, section: int = SECTION
) -> Iterator[Sequence[Record]]:
    """The store's notification log after position ``after``, up to ``up_to`` (inclusive).

    On SQLite it reads only the columns an audit needs, as plain rows (no UUID parsed, no
    Notification built): replay's read costs half the recorder's ``select_notifications``.
    """
    read = (
        _sqlite_reader(app.recorder)
        if isinstance(app.recorder, SQLiteApplicationRecorder)
        else app.recorder.select_notifications
    )
    start = after + 1
    while up_to is None or start <= up_to:
        page = read(start=start, limit=section, stop=up_to)
        if not page:
            return
        yield page
        start = page[-1].id + 1


def _sqlite_reader(recorder: SQLiteApplicationRecorder) -> Callable[..., Sequence[Record]]:
    statement = (
        f"SELECT rowid, originator_id, originator_version, state "
        f"FROM {recorder.events_table_name} WHERE rowid>=? AND rowid<=? ORDER BY rowid LIMIT ?"
    )

    def read(*, start: int, limit: int, stop: int | None) -> Sequence[Record]:
        with recorder.datastore.transaction(commit=False) as wrapped:
            cursor = wrapped.sqlite_cursor
            cursor.row_factory = None  # plain tuples, not sqlite3.Row
            cursor.execute(statement, (start, stop if stop is not None else 2**62, limit))
            return list(map(Row._make, cursor.fetchall()))

    return read
