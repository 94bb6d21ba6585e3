"""The status projection's fast paths give what the general ones give."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from nats.aio.msg import Msg

from approvals.projections.status.projector import stream_sequence
from approvals.projections.status.view import timestamp

TIMES = [
    datetime(2026, 12, 1, 17, 50, 54, 177100, tzinfo=UTC),
    datetime(2026, 12, 1, 17, 50, 54, tzinfo=UTC),  # whole seconds: msgspec writes no fraction
    datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    datetime(2026, 12, 1, 17, 50, 54, 5, tzinfo=timezone(timedelta(0))),
    datetime(2026, 12, 1, 17, 50, 54, 5, tzinfo=timezone(timedelta(hours=-3))),
]


@pytest.mark.parametrize("value", TIMES)
def test_timestamp_is_fixed_width_utc_text(value: datetime) -> None:
    expected = value.astimezone(UTC).isoformat(timespec="microseconds")
    assert timestamp(value) == expected
    assert len(timestamp(value)) == len("2026-12-01T17:50:54.177100+00:00")


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.APPROVALS.status-projection.1.4711.4700.1764611454177100000.12",
        # With a domain and an account hash: nats-py's own parser.
        "$JS.ACK.hub.ACCHASH.APPROVALS.status-projection.1.4711.4700.1764611454177100000.12.x",
    ],
)
def test_stream_sequence_matches_nats_py(reply: str) -> None:
    msg = Msg(_client=None, subject="approvals.events.acme", reply=reply)  # type: ignore[arg-type]
    assert stream_sequence(msg) == msg.metadata.sequence.stream == 4711
