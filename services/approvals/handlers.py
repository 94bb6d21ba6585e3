"""NATS request/reply handlers for ``approvals.cmd.<workspace>.<verb>`` (queue group).

A handler decodes and validates at the edge, then queues the command; one flush per turn of the
event loop decides and saves everything queued in a single transaction (group commit) and only
then replies. Bad input is answered at once with a typed error and never reaches the store.

With several instances (a lease), an instance that does not hold the relay's lease hands each
command to the one that does (``approvals.lead.<workspace>.<verb>``) and passes its answer back:
their commits would otherwise take turns at the store's table lock and each other's versions
(the budget, an approval spend-checked on one and decided on the other), one batch re-decided
for every collision. While nobody holds the lease (a takeover), an instance decides itself.

On SQLite the flush runs on the event loop (it is CPU, and a thread would fight the loop for the
GIL). On PostgreSQL (``blocking_io``) it runs in a thread, one flush at a time, the next taking
whatever queued meanwhile: a flush mostly waits for the server (round trips, the table lock that
orders notification ids, the commit's fsync), and the loop goes on taking commands, replying and
relaying while it waits.

These are plain nats-py subscriptions on the connection the FastStream broker holds: measured on
this machine, a FastStream request handler costs more CPU per request than the whole budget for
keeping up with the store (see STACK-FACTS.md), while the plain callback leaves room to spare.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from approvals.schemas import codec, subjects
from approvals.schemas.codec import command_decoders, encoder
from approvals.schemas.passkeys import PasskeysExport
from approvals.schemas.receipts import KeysReply
from approvals.schemas.replies import (
    ApiKeyReply,
    ApiKeyState,
    BudgetReply,
    BudgetState,
    GrantsReply,
    MembershipsReply,
    Reply,
    WorkspaceReply,
)
from approvals.schemas.wording import WORDS, in_words
from approvals.services.approvals import governance, measured, traced
from approvals.services.approvals.budget import period_of
from approvals.services.approvals.errors import (
    ApprovalError,
    Invalid,
    NotFound,
    PasskeyRequired,
    TooLarge,
)
from approvals.services.approvals.views import (
    approval_state,
    grant_state,
    passkey_state,
    web_url,
    workspace_state,
)
from approvals.services.runtime import tracing
from approvals.services.runtime.ops import counted

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from approvals.schemas.commands import Command
    from approvals.services.approvals.application import Approvals, Handled, Result
    from approvals.services.runtime.lease import Lease
    from approvals.services.runtime.settings import Settings

log = logging.getLogger(__name__)

LEASE_CHECK_S = 0.2  # how often an instance looks whether it holds the relay's lease
STOP_S = 10.0  # what answers still under way may take at stop
HAND_OVER_TIMEOUT_S = 60.0  # longer than any caller waits: the holder's answer, or none


class CommandHandlers:
    def __init__(
        self,
        app: Approvals,
        nc: Client,
        settings: Settings,
        on_commit: Callable[[], None] = lambda: None,
        *,
        blocking_io: bool = False,
        lease: Lease | None = None,
    ) -> None:
        self.app = app
        self.nc = nc
        self.settings = settings
        self.on_commit = on_commit
        self.blocking_io = blocking_io
        self._flushing: asyncio.Task[None] | None = None  # blocking_io: the flush in its thread
        self.lease = lease
        self._lead: Subscription | None = None  # the lease's holder: commands handed to it
        self._leading: asyncio.Task[None] | None = None
        self._stopping = False
        # (workspace, command, reply subject, verb, arrival time)
        self._queued: list[tuple[str, Command, str, str, float]] = []
        self._flush_scheduled = False
        self._subscriptions: list[Subscription] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._workspaces: set[str] = set()  # every workspace configured so far
        self._scanned = 0  # the notification the set is built up to
        self._grant_slots: dict[str, set[UUID]] = {}  # every slot given a grant, by workspace
        self._grants_scanned = 0
        self._passkey_ids: dict[str, set[UUID]] = {}  # every credential registered, by workspace
        self._passkeys_scanned = 0
        self._headers: dict[str, dict[str, str] | None] = {}  # tracing on: by reply subject

    async def start(self) -> None:
        for verb in subjects.COMMAND_VERBS:
            self._subscriptions.append(
                await self.nc.subscribe(
                    subjects.command_wildcard(verb),
                    queue=subjects.COMMAND_QUEUE,
                    cb=self._on_command,
                    pending_msgs_limit=100_000,
                )
            )
        # The settings in force and the budget are the command service's own state: it answers.
        for query, answer in (
            ("workspace", self._on_workspace_query),
            ("budget", self._on_budget_query),
            ("api_key", self._on_api_key_query),
            ("grants", self._on_grants_query),
            ("passkeys", self._on_passkeys_query),
        ):
            self._subscriptions.append(
                await self.nc.subscribe(
                    subjects.query_wildcard(query), queue=subjects.COMMAND_QUEUE, cb=answer
                )
            )
        if self.lease is not None:
            self._leading = asyncio.create_task(self._follow_lease(), name="command-lead")
        for subject, cb in (
            (subjects.KEYS_QUERY, self._on_keys_query),
            (subjects.MEMBERSHIPS_QUERY, self._on_memberships_query),
        ):
            self._subscriptions.append(
                await self.nc.subscribe(subject, queue=subjects.COMMAND_QUEUE, cb=cb)
            )

    async def stop(self) -> None:
        """Stop taking commands, answer the ones already queued."""
        self._stopping = True
        if self._leading is not None:
            self._leading.cancel()
            await asyncio.wait({self._leading})
            self._leading = None
        if self._lead is not None:
            self._subscriptions.append(self._lead)
            self._lead = None
        for subscription in self._subscriptions:
            await subscription.unsubscribe()
        self._subscriptions.clear()
        if self._flushing is not None:
            await asyncio.wait({self._flushing})  # it answers what queued meanwhile too
        if self._queued:
            self._flush()
        if self._sending:
            # Bounded: a command handed to a holder that died gets no answer from here.
            _, late = await asyncio.wait(list(self._sending), timeout=STOP_S)
            for task in late:
                task.cancel()

    async def _follow_lease(self) -> None:
        """Take the commands handed to the relay's lease holder while this instance holds it."""
        assert self.lease is not None
        while True:
            held = self.lease.held.is_set()
            if held and self._lead is None:
                self._lead = await self.nc.subscribe(
                    subjects.COMMAND_LEAD_WILDCARD, queue=subjects.COMMAND_QUEUE,
                    cb=self._on_message, pending_msgs_limit=100_000,
                )  # fmt: skip
            elif not held and self._lead is not None:
                lead, self._lead = self._lead, None
                with contextlib.suppress(NatsError):
                    await lead.unsubscribe()
            await asyncio.sleep(LEASE_CHECK_S)

    async def _on_command(self, msg: Msg) -> None:
        if self.lease is None or self.lease.held.is_set() or self._stopping:
            await self._on_message(msg)
            return
        task = asyncio.get_running_loop().create_task(self._hand_over(msg))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _hand_over(self, msg: Msg) -> None:
        """Pass a command to the lease's holder and its answer back to the caller; decide it
        here if nobody holds the lease (nobody took it: nothing was stored)."""
        _, _, workspace_id, verb = msg.subject.split(".", 3)
        lead = f"{subjects.COMMAND_LEAD}.{workspace_id}.{verb}"
        try:
            answer = await self.nc.request(
                lead, msg.data, timeout=HAND_OVER_TIMEOUT_S, headers=msg.headers
            )
        except NoRespondersError:
            await self._on_message(msg)
            return
        except (NatsTimeoutError, NatsError) as error:
            # The holder may have stored it: no answer is the truth (the caller's timeout).
            log.warning("the relay's lease holder did not answer a %s command (%s)", verb, error)
            return
        if msg.reply:
            await self.nc.publish(msg.reply, answer.data)

    async def _on_message(self, msg: Msg) -> None:
        arrived, verb = time.perf_counter(), msg.subject.rsplit(".", 1)[-1]
        try:
            workspace_id, cmd = self._decode(msg)
        except ApprovalError as error:
            counted(verb, error.code, None, arrived)
            if msg.reply:
                await self.nc.publish(msg.reply, encode_error(error))
            return
        if tracing.ENABLED and msg.reply:
            cmd = traced.arrived(verb, cmd, msg.headers)
            self._headers[msg.reply] = msg.headers
        self._queued.append((workspace_id, cmd, msg.reply, verb, arrived))
        if self.blocking_io:
            if self._flushing is None:
                self._flushing = asyncio.get_running_loop().create_task(self._flush_in_thread())
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _on_workspace_query(self, msg: Msg) -> None:
        await self._answer(msg, self._workspace_reply)

    async def _on_budget_query(self, msg: Msg) -> None:
        await self._answer(msg, self._budget_reply)

    async def _on_grants_query(self, msg: Msg) -> None:
        await self._answer(msg, lambda ws: self._grants_reply(ws, msg.data))

    def _grants_reply(self, ws: governance.Workspace, data: bytes) -> GrantsReply:
        """The workspace's grants, newest first: the active ones, or with ``{"all": true}``
        the expired and revoked ones too (the last grant of each slot)."""
        try:
            every = bool((msgspec.json.decode(data) if data.strip() else {}).get("all", False))
        except (msgspec.DecodeError, AttributeError):
            raise Invalid('the query must be a JSON object, e.g. {"all": true}') from None
        found, self._grants_scanned = self.app.grant_slots(self._grants_scanned)
        for workspace_id, slots in found.items():
            self._grant_slots.setdefault(workspace_id, set()).update(slots)
        at = now()
        listed = [
            grant_state(grant, ws, at)
            for slot in self._grant_slots.get(ws.workspace_id, ())
            if (grant := self.app.grant(slot)) is not None
        ]
        listed = [g for g in listed if every or g.status == "active"]
        return GrantsReply(grants=tuple(sorted(listed, key=lambda g: g.granted_at, reverse=True)))

    async def _on_passkeys_query(self, msg: Msg) -> None:
        await self._answer(msg, lambda ws: self._passkeys_reply(ws, msg.data))

    def _passkeys_reply(self, ws: governance.Workspace, data: bytes) -> PasskeysExport:
        """The workspace's registered passkeys (removed ones with ``removed_at``), or with
        ``{"member": "user:ana"}`` one member's: what verifiers check assertions against."""
        try:
            member = (msgspec.json.decode(data) if data.strip() else {}).get("member")
        except (msgspec.DecodeError, AttributeError):
            raise Invalid('the query must be a JSON object, e.g. {"member": "user:ana"}') from None
        found, self._passkeys_scanned = self.app.passkey_ids(self._passkeys_scanned)
        for workspace_id, ids in found.items():
            self._passkey_ids.setdefault(workspace_id, set()).update(ids)
        listed = [
            passkey_state(key)
            for aggregate_id in self._passkey_ids.get(ws.workspace_id, ())
            if (key := self.app.passkey(aggregate_id)) is not None
            and (member is None or key.member == member)
        ]
        return PasskeysExport(passkeys=tuple(sorted(listed, key=lambda k: k.registered_at)))

    async def _on_keys_query(self, msg: Msg) -> None:
        if msg.reply:
            reply = KeysReply(keys=(self.app.signer.public_key(),))
            await self.nc.publish(msg.reply, encoder.encode(reply))

    async def _on_memberships_query(self, msg: Msg) -> None:
        try:
            member = _string_field(msg.data, "member")
            found, self._scanned = self.app.configured_workspaces(self._scanned)
            self._workspaces |= found
            belongs: dict[str, str] = {}
            for workspace_id in sorted(self._workspaces):
                ws = self.app.workspace(workspace_id)
                named = ws.member_of(member) if ws else None
                if named is not None:
                    belongs[workspace_id] = named
            data = encoder.encode(MembershipsReply(workspaces=belongs))
        except ApprovalError as error:
            data = encode_error(error)
        if msg.reply:
            await self.nc.publish(msg.reply, data)

    async def _on_api_key_query(self, msg: Msg) -> None:
        await self._answer(msg, lambda ws: self._api_key_reply(ws, msg.data))

    def _api_key_reply(self, ws: governance.Workspace, data: bytes) -> ApiKeyReply:
        key_id = _string_field(data, "key_id")
        key = self.app.api_key(ws.workspace_id, key_id)
        if key is None:
            raise NotFound("no such API key", key_id=key_id, kind="api_key")
        return ApiKeyReply(
            key=ApiKeyState(
                key_id=key.key_id, actor=key.acts_as, name=key.name,
                secret_sha256=key.secret_sha256, revoked=key.revoked,
                created_by=key.created_by, created_at=key.created_at,
            )
        )  # fmt: skip

    async def _answer(self, msg: Msg, build: Callable[[governance.Workspace], Any]) -> None:
        """Reply to a query about the workspace of the subject: ``build``'s reply or the error."""
        workspace_id = msg.subject.split(".")[2]
        try:
            if not subjects.is_token(workspace_id):
                raise Invalid(
                    f"workspace must match {subjects.TOKEN_PATTERN}", workspace=workspace_id
                )
            ws = governance.require_workspace(self.app.workspace(workspace_id), workspace_id)
            data = encoder.encode(build(ws))
        except ApprovalError as error:
            data = encode_error(error)
        if msg.reply:
            await self.nc.publish(msg.reply, data)

    def _workspace_reply(self, ws: governance.Workspace) -> WorkspaceReply:
        return WorkspaceReply(workspace=workspace_state(ws, now()))

    def _budget_reply(self, ws: governance.Workspace) -> BudgetReply:
        limits = ws.settings.budget
        if limits is None:
            raise NotFound(f"workspace {ws.workspace_id} has no budget",
                           workspace=ws.workspace_id, kind="budget")  # fmt: skip
        period = period_of(limits.period, now())
        held = self.app.budget_in(ws.workspace_id, period)
        committed = held.committed if held else 0.0
        return BudgetReply(
            budget=BudgetState(
                workspace_id=ws.workspace_id,
                period=period,
                cap=limits.cap,
                max_per_run=limits.max_per_run,
                committed=committed,
                remaining=max(0.0, limits.cap - committed),
                held=len(held.reservations) if held else 0,
            )
        )

    def _decode(self, msg: Msg) -> tuple[str, Command]:
        parts = msg.subject.split(".")
        workspace_id, verb = parts[2], parts[3]
        if not subjects.is_token(workspace_id):
            raise Invalid(f"workspace {workspace_id!r} may hold {WORDS[subjects.TOKEN_PATTERN]}",
                          workspace=workspace_id)  # fmt: skip
        if len(msg.data) > self.settings.max_payload_bytes:
            raise TooLarge(
                f"the command is {len(msg.data)} bytes, over the limit of "
                f"{self.settings.max_payload_bytes}",
                size=len(msg.data),
                limit=self.settings.max_payload_bytes,
            )
        try:
            return workspace_id, command_decoders[verb].decode(msg.data)
        except msgspec.ValidationError as error:
            raise Invalid(f"invalid {verb} command: {in_words(str(error))}", verb=verb) from None
        except msgspec.DecodeError as error:
            raise Invalid(f"malformed JSON: {error}", verb=verb) from None

    def _flush(self) -> None:
        self._flush_scheduled = False
        queued, self._queued = self._queued, []
        self._finish(queued, *self._decide(queued))

    async def _flush_in_thread(self) -> None:
        try:
            while self._queued:
                await asyncio.sleep(0)  # what arrived with it joins the batch
                queued, self._queued = self._queued, []
                # Shielded: a thread cannot be stopped, and its commit must be answered.
                decided = await asyncio.shield(asyncio.to_thread(self._decide, queued))
                self._finish(queued, *decided)
        finally:
            self._flushing = None

    def _decide(
        self, queued: list[tuple[str, Command, str, str, float]]
    ) -> tuple[Handled | None, tuple[int, int]]:
        """Decide and save ``queued`` in one transaction (None if the store failed), and when
        the save began and ended (the commit span's times, with tracing on)."""
        saving = time.time_ns()
        try:
            handled = self.app.handle_batch([(ws, cmd) for ws, cmd, *_ in queued])
        except Exception:
            log.exception("a batch of %d commands failed; nothing of it was stored", len(queued))
            return None, (saving, time.time_ns())
        return handled, (saving, time.time_ns())

    def _finish(
        self,
        queued: list[tuple[str, Command, str, str, float]],
        handled: Handled | None,
        window: tuple[int, int],
    ) -> None:
        """Count and answer a decided batch (on the loop: it wakes the relay)."""
        if handled is None:
            failure = codec.encode_error(
                "unavailable", "the store failed; nothing was stored; retry"
            )
            done = time.perf_counter()
            for *_, verb, arrived in queued:
                counted(verb, "unavailable", arrived, done)
            replies = [(reply, failure) for _, _, reply, *_ in queued]
            for _, _, reply, *_ in queued:
                self._headers.pop(reply, None)
        else:
            if handled.last_notification_id is not None:
                self.on_commit()
            done = time.perf_counter()
            replies = []
            for (ws, _, reply, verb, arrived), result in zip(queued, handled.results, strict=True):
                outcome = result.code if isinstance(result, ApprovalError) else result.outcome
                counted(verb, outcome, arrived, done)
                measured.handled(verb, ws, result)
                replies.append((reply, self._encode_result(result)))
            if tracing.ENABLED:
                saved = None if handled.last_notification_id is None else window
                traced.commands_handled(
                    [(ws, cmd, verb, arrived, self._headers.pop(reply, None))
                     for ws, cmd, reply, verb, arrived in queued],
                    handled.results, saved, done,
                )  # fmt: skip
        task = asyncio.get_running_loop().create_task(self._send(replies))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, replies: list[tuple[str, bytes]]) -> None:
        for subject, data in replies:
            if subject:
                await self.nc.publish(subject, data)

    def _encode_result(self, result: Result | ApprovalError) -> bytes:
        if isinstance(result, ApprovalError):
            if isinstance(result, PasskeyRequired) and "approval_id" in result.details:
                # Where the person can finish it: the web inbox runs the passkey ceremony.
                ws = result.details.get("workspace_id", "")
                url = web_url(self.settings.web_url, ws, result.details["approval_id"])
                result.details["web_url"] = url
                result.message = f"{result.message}: {url}"
            return encode_error(result)
        state = (
            approval_state(result.approval, self.settings.web_url)
            if result.approval is not None
            else None
        )
        return encoder.encode(
            Reply(
                outcome=result.outcome,  # type: ignore[arg-type]
                approval=state,
                replayed=result.replayed,
                policy=result.policy,
                settings_version=result.workspace.version if result.workspace else None,
                changes=result.changes,
            )
        )


def _string_field(data: bytes, name: str) -> str:
    """One string field of a small query body, or Invalid."""
    try:
        value = msgspec.json.decode(data).get(name)
    except (msgspec.DecodeError, AttributeError):
        raise Invalid(f"the query must be a JSON object with {name}") from None
    if not isinstance(value, str) or not value or len(value) > 200:
        raise Invalid(f"{name} must be a string of 1 to 200 characters", field=name)
    return value


def now() -> datetime:
    return datetime.now(UTC)


def encode_error(error: ApprovalError) -> bytes:
    return codec.encode_error(error.code, error.message, error.details)
