"""The delivery service: a durable consumer of ``spend_checked`` (a request that passed its spend
check), which puts each pending request on its workspace's channels for its risk level (the web
inbox always) and records each through the ``deliver`` command: ``delivered`` with the channel's
own reference, or ``delivery_failed`` after ``APPROVALS_DELIVERY_ATTEMPTS`` tries with a doubling
pause (at once when retrying cannot help).

Exactly once per channel, through a crash at any point: before it sends, it looks for the record
``<approval id>.<channel>`` in the JetStream key-value bucket ``approvals_deliveries``, and marks
it ``sending``; once a channel took the notice, the record is written before ``deliver`` is sent,
so a redelivered event finds it and only sends the (idempotent: once per channel) ``deliver``
again. The remaining window, a crash between a channel's acceptance and the record's write, is
covered by the stable delivery id each channel is given (Standard Webhooks' ``webhook-id``), by
which it drops a repeat.

A decision may land at any moment of this. Once the request is decided no channel is begun, but
one begun (it may have taken the request) is finished and recorded all the same: the command
service takes ``deliver`` whatever the approval's state. Outcome notices follow both the endings
and ``delivered``: each channel is told by whichever of its ``delivered`` and the ending is later
in the approval's history, so it is told once, whatever order they are handled in.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError

from approvals.schemas import events, subjects
from approvals.schemas.codec import encoder, reply_error
from approvals.schemas.workspace import ChannelConfig, WorkspaceSettings
from approvals.services.delivery import resume
from approvals.services.delivery.adapters import ADAPTERS, DeliveryError
from approvals.services.delivery.notice import Notice, Outcome
from approvals.services.runtime import tracing
from approvals.services.runtime.bus import ensure_kv
from approvals.services.runtime.consumer import (
    ConsumerService,
    EventConsumers,
    Unavailable,
    command,
)
from approvals.services.runtime.ops import DELIVERIES

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.kv import KeyValue

    from approvals.services.delivery.adapters import Adapter
    from approvals.services.runtime.settings import Settings

log = logging.getLogger(__name__)

ACTOR = "service:delivery"
DURABLE = "delivery"
OUTCOMES = "delivery-outcomes"
NUDGES = "delivery-reminders"
ENDINGS = ("approved", "rejected", "expired", "cancelled", "responded")
RECORDS_BUCKET = "approvals_deliveries"


class Record(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What happened on one channel: its reference, or why it never took the notice."""

    target: str
    ref: str | None = None
    error: str | None = None
    attempts: int = 1
    sending: bool = False  # begun, not known to have been taken: finish it even once decided


class Loaded(NamedTuple):
    settings: WorkspaceSettings
    view: dict[str, Any]  # the approval as the status view shows it
    timeline: list[dict[str, Any]]  # its events; the first is the request


class Delivery:
    def __init__(
        self,
        nc: Client,
        settings: Settings,
        *,
        adapters: dict[str, Adapter] | None = None,
        concurrency: int = 32,
    ) -> None:
        self.nc = nc
        self.settings = settings
        self.adapters = adapters or {kind: cls(settings) for kind, cls in ADAPTERS.items()}
        self.consumers = EventConsumers(nc, concurrency=concurrency,
                                        ack_wait_s=settings.ack_wait_s)  # fmt: skip
        self.records: KeyValue | None = None

    async def start(self) -> None:
        self.records = await ensure_kv(self.nc.jetstream(), RECORDS_BUCKET)
        await self.consumers.consume(DURABLE, ("spend_checked",), self.process,
                                     max_ack_pending=1000)  # fmt: skip
        await self.consumers.consume(OUTCOMES, (*ENDINGS, "delivered"), self.tell_outcome,
                                     max_ack_pending=1000)  # fmt: skip
        await self.consumers.consume(NUDGES, ("reminded", "escalated"), self.nudge,
                                     max_ack_pending=1000)  # fmt: skip

    async def stop(self) -> None:
        await self.consumers.stop()

    async def _load(self, event: events.Event) -> Loaded:
        """The workspace's settings, the approval as the view has it (at least at ``event``)
        and its timeline.

        Nothing is ever deleted: an approval the view does not show (yet) means the view is
        behind (a projection failing over, a view being rebuilt), so the event is handed back,
        never dropped."""
        workspace, approval_id = event.workspace_id, str(event.approval_id)
        found = await self._ask(workspace, "workspace", {}, f"workspace {workspace}")
        query = {"approval_id": approval_id, "min_version": event.version}
        got = await self._ask(workspace, "get", query, approval_id)
        if not got.get("caught_up", True):
            raise Unavailable(f"the status view has not reached {approval_id} yet")
        history = await self._ask(workspace, "history", {"approval_id": approval_id})
        timeline = history.get("timeline") or []
        if not timeline:
            raise Unavailable(f"the status view has no history of {approval_id} yet")
        settings = msgspec.convert(found["workspace"]["settings"], WorkspaceSettings)
        return Loaded(settings=settings, view=got["approval"], timeline=timeline)

    async def _recorded(self, key: str) -> bytes | None:
        """What the records bucket holds under ``key`` (None: nothing was sent for it yet)."""
        assert self.records is not None, "start() first"
        try:
            return (await self.records.get(key)).value or b"{}"
        except KeyNotFoundError:
            return None

    async def process(self, event: events.AnyEvent) -> float | None:
        if not isinstance(event, events.SpendChecked):
            return None
        loaded = await self._load(event)
        settings, view = loaded.settings, loaded.view
        notice = self.notice(view, loaded.timeline[0]["event"],
                             passkey=settings.passkey_required(view["risk_level"]))  # fmt: skip
        begin = view["status"] == "pending"  # decided: only what was begun is finished
        for channel in dict.fromkeys(("inbox", *settings.channels.get(view["risk_level"], ()))):
            config = settings.channel.get(channel, ChannelConfig())
            await self.deliver(notice, channel, config, begin=begin)
        return None

    async def tell_outcome(self, event: events.AnyEvent) -> float | None:
        """Tell every channel that carried a request how it ended, once each: on the ending,
        the channels recorded before it; on a ``delivered`` after the ending, that channel."""
        if not isinstance(event, events.Approved | events.Rejected | events.Expired
                          | events.Cancelled | events.Responded | events.Delivered):  # fmt: skip
            return None
        loaded = await self._load(event)
        timeline, view = loaded.timeline, loaded.view
        if not any(entry["version"] >= event.version for entry in timeline):
            raise Unavailable(f"the status view has no history of {event.approval_id} yet")
        ending = next((entry for entry in timeline if entry["type"] in ENDINGS), None)
        if ending is None:
            return None  # delivered while pending: the ending will tell it
        outcome = Outcome(
            workspace_id=event.workspace_id, approval_id=str(event.approval_id),
            title=view["title"], status=ending["type"], decided_by=ending["actor"],
            # an answer's message is its reason, as the requester reads it everywhere else
            reason=ending["event"].get("reason", ending["event"].get("message")),
            rerun=ending["event"].get("rerun", False),
            web_url=view["web_url"],
        )  # fmt: skip
        if ending["type"] == "approved":
            outcome = msgspec.structs.replace(outcome, approved_digest=view.get("approved_digest"),
                approved_action=view.get("approved_action"),
                approved_payload=view.get("approved_payload"))  # fmt: skip
        url = timeline[0]["event"].get("resume_url")
        if url and event.version == ending["version"]:  # the ending itself: once per outcome
            key = f"{outcome.approval_id}.{resume.CHANNEL}.{outcome.status}"
            assert self.records is not None, "start() first"
            webhook = self.adapters.get("webhook") or ADAPTERS["webhook"](self.settings)
            await resume.resume(self.records, webhook, loaded.settings,
                                outcome, url, attempts=self.settings.delivery_attempts,
                                recorded=await self._recorded(key))  # fmt: skip
        for entry in timeline:
            # The later of a channel's ``delivered`` and the ending tells it: one event only.
            teller = max(entry["version"], ending["version"])
            if entry["type"] == "delivered" and teller == event.version:
                delivered = entry["event"]
                config = loaded.settings.channel.get(delivered["channel"], ChannelConfig())
                await self._tell(outcome, delivered["channel"], config,
                                 delivered.get("external_ref"))  # fmt: skip
        return None

    async def _tell(
        self, outcome: Outcome, channel: str, config: ChannelConfig, ref: str | None
    ) -> None:
        assert self.records is not None, "start() first"
        key = f"{outcome.approval_id}.{channel}.{outcome.status}"
        if await self._recorded(key) is not None:
            return  # told already
        adapter = self.adapters.get(config.kind or channel)
        if adapter is None:
            return
        try:
            await adapter.tell_outcome(outcome, config, ref, key)
        except DeliveryError as error:
            if not error.permanent:
                raise Unavailable(f"{channel} did not take the outcome: {error}") from None
            log.warning("%s: %s cannot be told the outcome: %s", outcome.approval_id, channel,
                        error)  # fmt: skip
        await self.records.put(key, b"told")

    async def nudge(self, event: events.AnyEvent) -> float | None:
        """A reminder to the request's channels, or an escalation to the escalation channels:
        each once per channel (record ``<approval id>.<channel>.<reminderN|escalated>``)."""
        if not isinstance(event, events.Reminded | events.Escalated):
            return None
        loaded = await self._load(event)
        if loaded.view["status"] != "pending":
            return None  # decided meanwhile: nobody needs reminding
        settings, approval_id = loaded.settings, str(event.approval_id)
        if isinstance(event, events.Reminded):
            prefix, suffix = "Reminder: ", f"reminder{event.count}"
            channels = settings.channels.get(loaded.view["risk_level"], ())
        else:
            prefix, suffix = f"Escalated to {event.group}: ", "escalated"
            channels = settings.reminders.escalate_channels if settings.reminders else ()
        notice = self.notice(
            loaded.view,
            loaded.timeline[0]["event"],
            prefix,
            passkey=settings.passkey_required(loaded.view["risk_level"]),
        )
        assert self.records is not None, "start() first"
        for channel in dict.fromkeys(channels):
            key = f"{approval_id}.{channel}.{suffix}"
            if await self._recorded(key) is not None:
                continue  # sent already
            config = settings.channel.get(channel, ChannelConfig())
            record = await self._send(notice, channel, config, key)
            await self.records.put(key, encoder.encode(record))
        return None

    @staticmethod
    def notice(
        view: dict[str, Any], requested: dict[str, Any], prefix: str = "", passkey: bool = False
    ) -> Notice:
        spend = view.get("spend")
        return Notice(
            workspace_id=view["workspace_id"], approval_id=view["id"],
            title=prefix + view["title"],
            summary=view["summary"], risk_level=view["risk_level"],
            requested_by=view["requested_by"], on_behalf_of=view["on_behalf_of"],
            skill_name=view["skill_name"], action=requested["action"],
            proposed_payload=requested.get("proposed_payload"), digest=view["digest"],
            expires_at=datetime.fromisoformat(view["expires_at"]),
            quorum=view["quorum"], web_url=view["web_url"],
            spend=spend if spend and spend.get("cap") is not None else None, passkey=passkey,
        )  # fmt: skip

    async def deliver(
        self, notice: Notice, channel: str, config: ChannelConfig, *, begin: bool = True
    ) -> None:
        """One channel, once: send unless the record says it was sent, then record it. With
        ``begin`` false (the request is decided) only a channel already begun is finished."""
        assert self.records is not None, "start() first"
        key = f"{notice.approval_id}.{channel}"
        sent = await self._recorded(key)
        record = msgspec.json.decode(sent, type=Record) if sent is not None else None
        if record is None and not begin:
            return  # never put on this channel: nobody there needs it now
        if record is None or record.sending:
            if record is None:  # a crash from here on leaves the mark: finished even if decided
                begun = Record(target=config.target or config.kind or channel, sending=True)
                await self.records.put(key, encoder.encode(begun))
            record = await self._send(notice, channel, config, key)
            await self.records.put(key, encoder.encode(record))
        body: dict[str, Any] = {"approval_id": notice.approval_id, "channel": channel,
                                "target": record.target[:200], "by": ACTOR}  # fmt: skip
        if record.error is not None:
            body |= {"error": record.error[:4000], "attempts": record.attempts}
        else:
            body["external_ref"] = (record.ref or "")[:200] or None
        await command(self.nc, notice.workspace_id, "deliver", body)

    async def _send(self, notice: Notice, channel: str, config: ChannelConfig, key: str) -> Record:
        kind = config.kind or channel
        target = config.target or kind
        adapter = self.adapters.get(kind)
        if adapter is None:
            return Record(target=target, error=f"no adapter for channel kind {kind!r}")
        attempts = max(1, self.settings.delivery_attempts)
        for attempt in range(1, attempts + 1):
            try:
                with tracing.current(f"deliver {kind}", "approvals.delivery", attributes={
                    "approvals.channel": kind, "approvals.attempt": attempt,
                    "approvals.approval_id": str(notice.approval_id),
                }):  # fmt: skip
                    ref = await adapter.send(notice, config, key)
                DELIVERIES.labels(kind, "delivered").inc()
                return Record(target=target, ref=ref, attempts=attempt)
            except DeliveryError as error:
                log.warning("%s to %s, attempt %d of %d: %s", notice.approval_id, channel,
                            attempt, attempts, error)  # fmt: skip
                if error.permanent or attempt == attempts:
                    DELIVERIES.labels(kind, "failed").inc()
                    return Record(target=target, error=str(error), attempts=attempt)
                DELIVERIES.labels(kind, "retried").inc()
            await asyncio.sleep(0.5 * 2 ** (attempt - 1))  # the retry schedule's pause
        raise AssertionError("unreachable")

    async def _ask(
        self, workspace: str, verb: str, body: dict[str, Any], what: str | None = None
    ) -> dict[str, Any]:
        """The query's reply; a refusal raises ``Unavailable`` naming ``what`` was asked for
        (without ``what``, the caller reads the refusal's fields itself)."""
        try:
            msg = await self.nc.request(subjects.query(workspace, verb), encoder.encode(body),
                                        timeout=10.0)  # fmt: skip
        except (NatsError, TimeoutError) as error:
            raise Unavailable(f"{verb} on {workspace} not answered ({error!r})") from None
        if what is not None and (refused := reply_error(msg.data)):
            raise Unavailable(f"{what}: {refused.code}: {refused.message}")
        answer: dict[str, Any] = msgspec.json.decode(msg.data)
        return answer


class DeliveryService(ConsumerService):
    """The delivery service on its own connection."""

    name = "delivery"

    def build(self, nc: Client) -> Delivery:
        return Delivery(nc, self.settings)
