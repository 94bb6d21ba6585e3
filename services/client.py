"""The Python client: ask before acting, wait, redeem exactly what was approved, report.

``ApprovalsClient`` speaks the bus (commands, queries, the event stream). Its high-level calls
raise ``ApprovalsError`` with the service's stable code when a command or query is refused.
``gate`` (a context manager) and ``require_approval`` (a decorator) wrap a function in the whole
flow; both are resumable: a request with the same idempotency key, from any process, finds the
same approval, so an agent may exit while a person decides and come back later.

    async with await ApprovalsClient.connect(url, "acme") as client:
        async with client.gate(requested_by=..., skill_name=..., skill_execution_id=...,
                               title=..., action=..., payload=...) as run:
            run.credits_used = do_it()
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import time
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import msgspec
import nats

from approvals.schemas import commands, subjects
from approvals.schemas.codec import canonical_encoder, encoder, event_decoder, reply_decoder
from approvals.schemas.commands import Action, Request, Via
from approvals.schemas.queries import ApprovalView, ViewReply, WaitReply
from approvals.schemas.receipts import KeysReply, PublicKey, Receipt, ReceiptBody
from approvals.schemas.replies import AnyReply, ErrorBody
from approvals.services.approvals.digest import action_digest
from approvals.services.approvals.receipts import verify
from approvals.services.event_feed import event_messages
from approvals.services.runtime.settings import servers

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

    from nats.aio.client import Client

    from approvals.schemas.events import AnyEvent
    from approvals.schemas.subjects import CommandVerb
    from approvals.services.refusals import Refusals

P = ParamSpec("P")
T = TypeVar("T")
DECIDED = frozenset({"approved", "rejected", "expired", "cancelled"})
WAIT_CHUNK_S = 300.0  # the longest single wait the projection accepts


CLIENT_VIA = Via(channel="client", auth="nats")  # the door recorded for this library


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
    (``approvals.services.refusals.Refusals``: its permission refusals)."""

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


class ApprovalsError(Exception):
    """A refusal, with the stable code, message and details of the service's error shape."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}


class ApprovalPending(Exception):
    """Nobody has decided yet: come back later with ``approval_id`` (or the same request)."""

    def __init__(self, approval_id: str, web_url: str) -> None:
        super().__init__(f"approval {approval_id} is still pending: {web_url}")
        self.approval_id = approval_id
        self.web_url = web_url


class ApprovalDenied(Exception):
    """The approval was rejected, expired or cancelled: the action must not run.

    ``reason`` is why, as the person gave it; ``rerun`` is true when they rejected it asking
    for a new request (prepare the action again, then ask again)."""

    def __init__(self, approval: ApprovalView) -> None:
        why = f" ({approval.reason})" if approval.reason else ""
        again = "; a new request is asked for" if approval.rerun else ""
        super().__init__(f"approval {approval.id} was {approval.status}{why}{again}")
        self.approval = approval
        self.reason = approval.reason
        self.rerun = approval.rerun


class _Status(msgspec.Struct, frozen=True):
    ok: bool
    error: ErrorBody | None = None


_status_decoder = msgspec.json.Decoder(_Status)
_wait_decoder = msgspec.json.Decoder(WaitReply)
_view_decoder = msgspec.json.Decoder(ViewReply)
_keys_decoder = msgspec.json.Decoder(KeysReply)


def _raise_for(data: bytes) -> None:
    status = _status_decoder.decode(data)
    if not status.ok:
        error = status.error or ErrorBody(code="internal", message="refused without a reason")
        raise ApprovalsError(error.code, error.message, error.details)


class ApprovalsClient:
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
        refusals on this connection (``approvals.services.refusals``)."""
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
            subjects.command(self.workspace, verb), payload, timeout=self.timeout
        )
        return reply_decoder.decode(msg.data)

    async def query(self, verb: str, body: msgspec.Struct | dict[str, Any]) -> bytes:
        """Send one query to the status projection; the reply's raw JSON."""
        msg = await self.nc.request(
            subjects.query(self.workspace, verb), encoder.encode(body), timeout=self.timeout
        )
        return msg.data

    async def events(
        self, approval_id: str = "*", *, follow: bool = False
    ) -> AsyncGenerator[tuple[int, AnyEvent]]:
        """The stored events of this workspace (or one approval) in stream order, with sequences.

        Without ``follow`` it stops at the last event the stream holds now. It needs only what
        a workspace's caller may do on the bus (``services/event_feed.py``).
        """
        filter_subject = subjects.events_of(self.workspace, approval_id)
        feed = event_messages(self.nc, filter_subject, follow=follow, refusals=self.refusals)
        async with contextlib.aclosing(feed) as messages:
            async for msg in messages:
                yield msg.metadata.sequence.stream, event_decoder.decode(msg.data)

    # -- the flow ------------------------------------------------------------------------

    async def _command(self, verb: CommandVerb, body: msgspec.Struct | dict[str, Any]) -> AnyReply:
        reply = await self.send(verb, body)
        if not reply.ok:
            error = reply.error or ErrorBody(code="internal", message="refused without a reason")
            raise ApprovalsError(error.code, error.message, error.details)
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

    def gate(
        self,
        *,
        action: Action | dict[str, Any],
        payload: Any,
        requested_by: str,
        approval_id: Any = None,
        wait_s: float = 30.0,
        **request: Any,
    ) -> contextlib.AbstractAsyncContextManager[Run]:
        """Run the body only once approved: request (or resume ``approval_id``), wait up to
        ``wait_s``, redeem, and report when the body ends (``failed`` if it raised).

        Raises ApprovalPending when nobody has decided in time (the request stays; enter the
        gate again later, from any process, with the same ``idempotency_key`` or the id) and
        ApprovalDenied when it was rejected, expired or cancelled. Without an
        ``idempotency_key`` one is made from the skill, its execution id and the action.

        An approver may have approved a narrower version (edits): the body then runs that one,
        ``run.action`` and ``run.payload``, never what was asked; the redeem names it."""
        return _gate(self, action, payload, requested_by, approval_id, wait_s, request)


class Run:
    """What the gated body may see and set: the approval, and the credits the run used."""

    def __init__(self, approval: ApprovalView | None, action: Action, payload: Any) -> None:
        self.approval = approval  # None when the action did not need approval
        self.action = action  # what to run: the approved version (an approver may have edited)
        self.payload = payload
        self.credits_used = 0.0
        self.summary = ""
        self.external_refs: tuple[str, ...] = ()
        self.outcome = "succeeded"


@contextlib.asynccontextmanager
async def _gate(
    client: ApprovalsClient,
    action: Action | dict[str, Any],
    payload: Any,
    requested_by: str,
    approval_id: Any,
    wait_s: float,
    request: dict[str, Any],
) -> AsyncIterator[Run]:
    action = msgspec.convert(action, Action)
    if approval_id is None:
        key = request.pop("idempotency_key", None) or _key(request, action, payload)
        asked = await client.request(
            **request, requested_by=requested_by, action=action, proposed_payload=payload,
            idempotency_key=key,
        )  # fmt: skip
        if asked.outcome == "not_required" or asked.approval is None:
            yield Run(None, action, payload)
            return
        approval_id = asked.approval.id
    approval = await client.wait(approval_id, wait_s)
    if approval.status == "pending":
        raise ApprovalPending(str(approval.id), approval.web_url)
    if approval.status != "approved":
        raise ApprovalDenied(approval)
    if approval.approved_action is not None:  # the version approved, edited or not
        action, payload = approval.approved_action, approval.approved_payload
    await client.redeem(approval.id, action=action, payload=payload, executor=requested_by)
    run = Run(approval, action, payload)
    try:
        yield run
    except BaseException as error:
        await client.report(approval.id, credits_used=run.credits_used, outcome="failed",
                            by=requested_by, summary=f"{type(error).__name__}: {error}"[:2000],
                            external_refs=run.external_refs)  # fmt: skip
        raise
    await client.report(approval.id, credits_used=run.credits_used, outcome=run.outcome,
                        by=requested_by, summary=run.summary,
                        external_refs=run.external_refs)  # fmt: skip


def _key(request: dict[str, Any], action: Action, payload: Any) -> str:
    digest = action_digest(action, payload)
    return f"{request.get('skill_name')}:{request.get('skill_execution_id')}:{digest[:16]}"


def require_approval(
    client: ApprovalsClient,
    *,
    action: Action | dict[str, Any],
    requested_by: str,
    skill_name: str,
    title: str,
    risk_level: str = "medium",
    summary: str = "",
    wait_s: float = 30.0,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Gate an async function on approval; its arguments are the proposed payload.

    The same call (same function, same arguments) made again, in this process or another,
    resumes the same approval; while nobody has decided it raises ApprovalPending."""

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        async def gated(*args: P.args, **kwargs: P.kwargs) -> T:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            payload = {"function": fn.__qualname__, "arguments": dict(bound.arguments)}
            call = hashlib.sha256(canonical_encoder.encode(payload)).hexdigest()[:16]
            async with client.gate(
                action=action, payload=payload, requested_by=requested_by,
                skill_name=skill_name, skill_execution_id=f"call-{call}", title=title,
                summary=summary, risk_level=risk_level, wait_s=wait_s,
            ) as run:  # fmt: skip
                # The arguments approved: an approver may have edited them.
                approved = run.payload.get("arguments") if isinstance(run.payload, dict) else None
                if isinstance(approved, dict):
                    bound.arguments.update(approved)
                return await fn(*bound.args, **bound.kwargs)

        return gated

    return decorate


def verify_receipt(
    receipt: Receipt | dict[str, Any] | bytes, keys: list[PublicKey] | dict[str, PublicKey]
) -> ReceiptBody:
    """Offline: the signed facts of a receipt, or ReceiptInvalid saying what is wrong."""
    if isinstance(receipt, bytes):
        receipt = msgspec.json.decode(receipt, type=Receipt)
    elif isinstance(receipt, dict):
        receipt = msgspec.convert(receipt, Receipt, strict=False)
    return verify(receipt, keys)


__all__ = [
    "ApprovalDenied",
    "ApprovalPending",
    "ApprovalsClient",
    "ApprovalsError",
    "Run",
    "require_approval",
    "verify_receipt",
]
