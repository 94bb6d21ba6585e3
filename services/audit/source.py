"""Where an audit reads the log from: the event store, the JetStream stream, or an export file.

Each source yields the log in sections (lists of records in notification order); a record has
the store's notification id (the position), the aggregate id and version, and the event's JSON.
The store's sections are read by the command service's own reader (``store_sections``, which its
checkpointer uses too); the stream's and an export's are read here.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
from typing import IO, TYPE_CHECKING
from uuid import UUID

import msgspec
from eventsourcing.sqlite import SQLiteApplicationRecorder

from approvals.client.event_feed import event_messages
from approvals.schemas import subjects
from approvals.schemas.codec import encoder
from approvals.schemas.subjects import MSG_ID_HEADER, NOTIFICATION_ID_HEADER
from approvals.services.approvals.notification_log import SECTION, Record, Row

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from nats.aio.client import Client

    from approvals.client.refusals import Refusals
    from approvals.services.approvals.application import Approvals


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    """Pause the cyclic garbage collector while a replay builds up state: each collection would
    walk everything built so far (events hold no cycles; reference counting frees them)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def aggregate_records(app: Approvals, aggregate_id: UUID) -> list[Record]:
    """Every stored event of one aggregate, in version order, with its position."""
    recorder = app.recorder
    if isinstance(recorder, SQLiteApplicationRecorder):
        statement = (
            f"SELECT rowid, originator_id, originator_version, state FROM "
            f"{recorder.events_table_name} WHERE originator_id=? ORDER BY originator_version"
        )
        with recorder.datastore.transaction(commit=False) as wrapped:
            cursor = wrapped.sqlite_cursor
            cursor.row_factory = None
            cursor.execute(statement, (aggregate_id.hex,))
            return list(map(Row._make, cursor.fetchall()))
    from eventsourcing.postgres import PostgresApplicationRecorder
    from psycopg.sql import SQL, Identifier

    assert isinstance(recorder, PostgresApplicationRecorder)
    query = SQL(
        "SELECT notification_id, originator_id, originator_version, state FROM {schema}.{table} "
        "WHERE originator_id = %s ORDER BY originator_version"
    ).format(schema=Identifier(recorder.datastore.schema),
             table=Identifier(recorder.events_table_name))  # fmt: skip
    with recorder.datastore.get_connection() as conn, conn.cursor() as rows:
        rows.execute(query, [aggregate_id])
        return [
            Row(r["notification_id"], r["originator_id"], r["originator_version"], r["state"])
            for r in rows.fetchall()
        ]


async def stream_sections(
    nc: Client,
    *,
    workspace: str = "*",
    approval_id: str = "*",
    up_to: int | None = None,
    section: int = SECTION,
    refusals: Refusals | None = None,
) -> AsyncIterator[list[Record]]:
    """The events the JetStream stream holds now (for one workspace and/or approval), in order.

    For an auditor who can read the bus but not the database (a workspace's caller reads its
    own workspace's). The position of each event is the notification id the relay put in its
    headers, so positions mean the same as in the store.
    """
    filter_subject = subjects.events_of(workspace, approval_id)
    batch: list[Record] = []
    feed = event_messages(nc, filter_subject, refusals=refusals)
    async with contextlib.aclosing(feed) as messages:
        async for msg in messages:
            headers = msg.headers or {}
            aggregate, _, version = headers[MSG_ID_HEADER].rpartition(":")
            row = Row(int(headers[NOTIFICATION_ID_HEADER]), UUID(aggregate), int(version),
                      msg.data)  # fmt: skip
            if up_to is not None and row.id > up_to:
                break
            batch.append(row)
            if len(batch) >= section:
                yield batch
                batch = []
    if batch:
        yield batch


def export_sections(lines: IO[bytes], *, section: int = SECTION) -> Iterator[list[Record]]:
    """The events of an export (``approvals audit export``): one JSON object per line, the
    event's own fields and its ``position``."""
    rows = (_exported(number, line) for number, line in enumerate(lines, 1) if line.strip())
    while batch := list(itertools.islice(rows, section)):
        yield batch


def _exported(number: int, line: bytes) -> Record:
    try:
        raw = msgspec.json.decode(line)
        position = raw.pop("position")
        # A workspace's events (budgets, settings) name their aggregate; an approval's are its.
        aggregate = raw["aggregate_id"] if "aggregate_id" in raw else raw["approval_id"]
        return Row(int(position), UUID(aggregate), int(raw["version"]), encoder.encode(raw))
    except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"line {number} is not an exported event ({error})") from None
