"""The client over NATS: ask before acting, wait, redeem exactly what was approved, report.

``ApprovalsClient`` speaks the bus (commands, queries, the event stream). Its high-level calls
raise ``ApprovalsError`` with the service's stable code when a command or query is refused;
``gate`` (``flow.py``) wraps a block in the whole flow.

    async with await ApprovalsClient.connect(url, "acme") as client:
        async with client.gate(requested_by=..., skill_name=..., skill_execution_id=...,
                               title=..., action=..., payload=...) as run:
            run.credits_used = do_it()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import msgspec
import nats

from approvals.client.errors import ApprovalsError
from approvals.client.event_feed import event_messages
from approvals.client.flow import DECIDED, WAIT_CHUNK_S, Caller
from approvals.client.tracing import trace_headers
from approvals.schemas import commands, subjects
from approvals.schemas.codec import encoder, event_decoder, reply_decoder, reply_error
from approvals.schemas.commands import Action, Request, Via
from approvals.schemas.digest import action_digest
from approvals.schemas.queries import ViewReply, WaitReply
from approvals.schemas.receipts import KeysReply
from approvals.schemas.signatures import verify_receipt

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

    from nats.aio.client import Client

    from approvals.client.refusals import Refusals
    from approvals.schemas.events import AnyEvent
    from approvals.schemas.queries import ApprovalView
    from approvals.schemas.receipts import PublicKey, Receipt, ReceiptBody
    from approvals.schemas.replies import AnyReply
    from approvals.schemas.subjects import CommandVerb


CLIENT_VIA = Via(channel="client", auth="nats")  # the door recorded for this library


def servers(url: str) -> list[str]:
    """``nats://a:4222,nats://b:4222`` as a list of server URLs."""
    return [part.strip() for part in url.split(",") if part.strip()]


async def connect_once(
    url: str,
    connect_timeout_s: float = 5.0,
    options: dict[str, Any] | None = None,
    *,
    error_cb: Callable[[Exception], Awaitable[None]] | None = None,
) -> Client:
    """A connection that is tried once (a server that is down fails at once, quietly: the
    caller reports it) and is not re-established if it drops. ``options``: nats-py's
    ``connect`` arguments (credentials, TLS:
    ``approvals.services.runtime.bus.connect_options``); ``error_cb`` hears the server's errors
    (``approvals.client.refusals.Refusals``: its permission refusals)."""

    async def quiet(error: Exception) -> None:
        return None

    return await nats.connect(
        servers(url),
        connect_timeout=connect_timeout_s,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
        error_cb=error_cb or quiet,
        **(options or {}),
    )


_wait_decoder = msgspec.json.Decoder(WaitReply)
_view_decoder = msgspec.json.Decoder(ViewReply)
_keys_decoder = msgspec.json.Decoder(KeysReply)


def _raise_for(data: bytes) -> None:
    if error := reply_error(data):
        raise ApprovalsError.of(error)


class ApprovalsClient(Caller):
    """The service over NATS, as one workspace's caller."""

    def __init__(
        self, nc: Client, workspace: str, reply_timeout: float = 5.0, *, via: Via = CLIENT_VIA
    ) -> None:
        self.nc = nc
        self.workspace = subjects.token(workspace, "workspace")
        self.timeout = reply_timeout
        self.via = via  # recorded on the events of every command this client sends
        self.refusals: Refusals | None = None  # told the subjects it uses, to name a refused one

    @classmethod
    async def connect(
        cls,
        url: str,
        workspace: str,
        reply_timeout: float = 5.0,
        *,
        via: Via = CLIENT_VIA,
        reconnect: bool = True,
        options: dict[str, Any] | None = None,
        refusals: Refusals | None = None,
    ) -> ApprovalsClient:
        """Connect to the bus. With ``reconnect`` (a long-lived client) the connection comes back
        after a server restart, and a server that is down at first is retried for a while;
        without it (a command line) an unreachable server fails at once. ``options``: nats-py's
        ``connect`` arguments (credentials, TLS). ``refusals`` hears the server's permission
        refusals on this connection (``approvals.client.refusals``)."""
        hear = refusals.hear if refusals is not None else None
        if not reconnect:
            nc = await connect_once(url, reply_timeout, options, error_cb=hear)
        else:
            heard = {"error_cb": hear} if hear is not None else {}
            async with asyncio.timeout(max(reply_timeout, 1.0) * 6):
                nc = await nats.connect(
                    servers(url), connect_timeout=reply_timeout, **heard, **(options or {})
                )
        client = cls(nc, workspace, reply_timeout, via=via)
        client.refusals = refusals
        return client

    async def close(self) -> None:
        await self.nc.drain()

    async def __aenter__(self) -> ApprovalsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, verb: CommandVerb, body: msgspec.Struct | dict[str, Any]) -> AnyReply:
        """Send one command and decode its reply (``ok`` tells which fields are set)."""
        if isinstance(body, dict):
            body = body if "via" in body else {**body, "via": self.via}
        elif isinstance(body, commands.Command) and body.via is None:
            body = msgspec.structs.replace(body, via=self.via)
        payload = body if isinstance(body, bytes) else encoder.encode(body)
        return await self.send_raw(verb, payload)

    async def send_raw(self, verb: CommandVerb, payload: bytes) -> AnyReply:
        msg = await self.nc.request(
            subjects.command(self.workspace, verb), payload, timeout=self.timeout,
            headers=trace_headers(),
        )  # fmt: skip
        return reply_decoder.decode(msg.data)

    async def query(self, verb: str, body: msgspec.Struct | dict[str, Any]) -> bytes:
        """Send one query to the status projection; the reply's raw JSON."""
        msg = await self.nc.request(
            subjects.query(self.workspace, verb), encoder.encode(body), timeout=self.timeout,
            headers=trace_headers(),
        )  # fmt: skip
        return msg.data

    async def events(
        self, approval_id: str = "*", *, follow: bool = False, since: int = 0
    ) -> AsyncGenerator[tuple[int, AnyEvent]]:
        """The stored events of this workspace (or one approval) in stream order, with sequences;
        those after stream sequence ``since`` (all by default: pass the last one you handled to
        go on from there).

        Without ``follow`` it stops at the last event the stream holds now. It needs only what
        a workspace's caller may do on the bus (``schemas/client/event_feed.py``).
        """
        filter_subject = subjects.events_of(self.workspace, approval_id)
        feed = event_messages(self.nc, filter_subject, follow=follow, start=since + 1,
                              refusals=self.refusals)  # fmt: skip
        async with contextlib.aclosing(feed) as messages:
            async for msg in messages:
                yield msg.metadata.sequence.stream, event_decoder.decode(msg.data)

    # -- the flow ------------------------------------------------------------------------

    async def _command(self, verb: CommandVerb, body: msgspec.Struct | dict[str, Any]) -> AnyReply:
        reply = await self.send(verb, body)
        if not reply.ok:
            raise ApprovalsError.of(reply.error)
        return reply

    async def check(self, **request: Any) -> AnyReply:
        """The dry run: would this request need approval, and why? Nothing is stored."""
        return await self._command("check", msgspec.convert(request, Request))

    async def request(self, **request: Any) -> AnyReply:
        """Ask before acting (the fields of a ``request`` command). ``outcome`` is
        ``not_required``, ``approved`` (a standing permission covered it) or
        ``approval_required`` with ``approval.id`` and ``approval.web_url``."""
        return await self._command("request", msgspec.convert(request, Request))

    async def get(self, approval_id: Any) -> ApprovalView:
        data = await self.query("get", {"approval_id": str(approval_id)})
        _raise_for(data)
        return _view_decoder.decode(data).approval

    async def wait(self, approval_id: Any, timeout_s: float) -> ApprovalView:
        """The approval once decided, or as it stands when ``timeout_s`` seconds have passed
        (its status still ``pending``): come back later with the same id."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            chunk = max(0.1, min(left, WAIT_CHUNK_S))
            data = await self._wait_once(approval_id, chunk)
            _raise_for(data)
            reply = _wait_decoder.decode(data)
            if reply.approval.status in DECIDED or deadline - time.monotonic() <= 0:
                return reply.approval

    async def _wait_once(self, approval_id: Any, seconds: float) -> bytes:
        body = encoder.encode({"approval_id": str(approval_id), "timeout_s": seconds})
        msg = await self.nc.request(
            subjects.query(self.workspace, "wait"), body, timeout=seconds + self.timeout
        )
        return msg.data

    async def redeem(
        self, approval_id: Any, *, action: Action | dict[str, Any], payload: Any, executor: str
    ) -> AnyReply:
        """The final check before running: the digest of what is about to run must be the
        approved one; once, before the redemption deadline. The action and payload go along, so
        a ``digest_mismatch`` says which of them differs (``details.differs``)."""
        action = msgspec.convert(action, Action)
        body = {"approval_id": str(approval_id), "digest": action_digest(action, payload),
                "executor": executor, "action": action, "proposed_payload": payload}  # fmt: skip
        return await self._command("redeem", body)

    async def report(
        self,
        approval_id: Any,
        *,
        credits_used: float,
        outcome: str,
        by: str,
        summary: str = "",
        external_refs: tuple[str, ...] = (),
    ) -> AnyReply:
        """What the run did; over the ceiling is recorded and flagged."""
        body = {"approval_id": str(approval_id), "credits_used": credits_used, "outcome": outcome,
                "by": by, "summary": summary, "external_refs": list(external_refs)}  # fmt: skip
        return await self._command("report", body)

    async def keys(self) -> tuple[PublicKey, ...]:
        """The public keys receipts are signed with (``approvals.query.keys``)."""
        msg = await self.nc.request(subjects.KEYS_QUERY, b"{}", timeout=self.timeout)
        _raise_for(msg.data)
        return _keys_decoder.decode(msg.data).keys

    async def verify_receipt(
        self, receipt: Receipt | dict[str, Any] | bytes, keys: list[PublicKey] | None = None
    ) -> ReceiptBody:
        """The signed facts if the receipt is valid; raises ``ReceiptInvalid`` otherwise.
        Offline when ``keys`` are given; else the service's public keys are asked for."""
        return verify_receipt(receipt, keys if keys is not None else list(await self.keys()))


__all__ = ["CLIENT_VIA", "ApprovalsClient", "connect_once", "servers"]
