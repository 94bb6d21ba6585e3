"""JSON Lines of the event log for a data warehouse: each stored event as it is, with its
``position`` (notification id) first; optionally one workspace's and a time range's."""

from __future__ import annotations

from datetime import datetime
from typing import IO, TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from approvals.services.approvals.notification_log import Record


class _Envelope(msgspec.Struct):
    workspace_id: str
    occurred_at: datetime


_envelope = msgspec.json.Decoder(_Envelope)


def export(
    sections: Iterable[Sequence[Record]],
    out: IO[bytes],
    *,
    workspace: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Write the events (``since`` <= occurred_at < ``until``); return how many."""
    written = 0
    for section in sections:
        lines = []
        for record in section:
            if workspace is not None or since is not None or until is not None:
                envelope = _envelope.decode(record.state)
                if workspace is not None and envelope.workspace_id != workspace:
                    continue
                if since is not None and envelope.occurred_at < since:
                    continue
                if until is not None and envelope.occurred_at >= until:
                    continue
            # The stored JSON object with the position put first: no decoding, no re-encoding.
            lines.append(b'{"position":%d,%s\n' % (record.id, bytes(record.state)[1:]))
        out.writelines(lines)
        written += len(lines)
    return written
