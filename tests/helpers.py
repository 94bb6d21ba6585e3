"""What many tests need: waiting with a deadline, sending a command, the error shape."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import msgspec

from approvals.schemas.codec import encoder

if TYPE_CHECKING:
    from collections.abc import Callable

    from approvals.client import ApprovalsClient


async def eventually(check: Callable[[], Any], within_s: float = 15.0) -> None:
    """Wait until ``check()`` (a bool or an awaitable of one) holds, or fail at the deadline."""
    deadline = time.monotonic() + within_s
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.02)


async def send(client: ApprovalsClient, verb: str, body: Any) -> dict[str, Any]:
    """Send a command (a dict, or bytes as they are) and return the reply's raw JSON."""
    payload = body if isinstance(body, bytes) else encoder.encode(body)
    msg = await client.nc.request(
        f"approvals.cmd.{client.workspace}.{verb}", payload, timeout=client.timeout
    )
    reply: dict[str, Any] = msgspec.json.decode(msg.data)
    return reply


def assert_error(reply: dict[str, Any], code: str) -> None:
    """The one error shape, exactly: ``{"ok": false, "error": {"code", "message", "details"}}``."""
    assert reply["ok"] is False, reply
    assert set(reply) == {"ok", "error"}
    assert set(reply["error"]) == {"code", "message", "details"}
    assert reply["error"]["code"] == code, reply
    assert reply["error"]["message"]
    assert isinstance(reply["error"]["details"], dict)
