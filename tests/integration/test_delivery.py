"""Delivery over a real nats-server, beside the command service, the status projection and the
spend-cap service: a webhook receiver on a local HTTP server checking Standard Webhooks
signatures, aiosmtpd as the SMTP server, and a delivery service SIGKILLed mid-batch."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode
from uuid import UUID

import httpx
import msgspec
import pytest
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js.errors import NotFoundError
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook

from approvals.client import ApprovalsClient
from approvals.projections.status.service import ProjectionService, view_lease
from approvals.schemas.codec import event_decoder
from approvals.schemas.commands import Via
from approvals.schemas.events import (
    Approved,
    Delivered,
    DeliveryFailed,
    Escalated,
    Reminded,
    Requested,
)
from approvals.schemas.subjects import STREAM
from approvals.schemas.workspace import ChannelConfig, Member, Reminders, WorkspaceSettings
from approvals.services.approvals.service import CommandService
from approvals.services.delivery.service import DeliveryService
from approvals.services.gateway.app import GatewayService
from approvals.services.runtime.bus import ensure_kv
from approvals.services.runtime.lease import BUCKET as LEASES
from approvals.services.runtime.settings import Settings
from approvals.services.spendcap.service import SpendCapService
from tests.e2e.devserver import free_port
from tests.helpers import eventually, send

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from approvals.services.runtime.natsserver import NatsServer

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes, the spec's form
ADMIN = "user:admin"


class Hooks:
    """A webhook receiver: records every POST; answers 503 to paths under /down; under /slow it
    answers no sooner than ``SLOW_S`` after the POST came and only once ``answer_slow`` is set
    (a receiver that takes its time, longer than the ack wait)."""

    SLOW_S = 3.0

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.answer_slow = threading.Event()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                came = time.monotonic()
                hooks.received.append((self.path, dict(self.headers), body))
                if self.path.startswith("/slow"):
                    hooks.answer_slow.wait(60)
                    time.sleep(max(0.0, came + hooks.SLOW_S - time.monotonic()))
                self.send_response(503 if self.path.startswith("/down") else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the delivery service calls 32 at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[tuple[dict[str, str], Any]]:
        return [(h, json.loads(b)) for p, h, b in self.received if p == path]


class Mailbox:
    """aiosmtpd, collecting what it is sent."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        mailbox = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                mailbox.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=free_port())
        self.controller.start()
        self.port = self.controller.port


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    receiver = Hooks()
    yield receiver
    receiver.answer_slow.set()
    receiver.server.shutdown()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    yield box
    box.controller.stop()


def workspace(hooks: Hooks) -> WorkspaceSettings:
    return WorkspaceSettings(
        members={ADMIN: Member(roles=("admin",)), "user:ana": Member(roles=("approver",)),
                 "service:agent": Member(roles=("requester",))},
        channels={"medium": ("inbox", "hooks", "email"), "high": ("down",),
                  "critical": ("private",)},
        channel={
            "hooks": ChannelConfig(kind="webhook", secret="TEST_HOOK_SECRET",
                                   target=f"{hooks.url}/hooks"),
            "down": ChannelConfig(kind="webhook", secret="TEST_HOOK_SECRET",
                                  target=f"{hooks.url}/down"),
            "private": ChannelConfig(kind="webhook", secret="TEST_HOOK_SECRET",
                                     target="http://10.0.0.1/hook"),
            "email": ChannelConfig(target="approvers@example.com"),
        },
    )  # fmt: skip


@pytest.fixture
def delivery_settings(tmp_path: Path, nats_server: NatsServer, mailbox: Mailbox) -> Settings:
    os.environ["TEST_HOOK_SECRET"] = SECRET
    return Settings(
        nats_url=nats_server.url, sqlite_path=tmp_path / "approvals.db",
        view_sqlite_path=tmp_path / "status.db", webhook_allow="127.0.0.1/32",
        smtp_host="127.0.0.1", smtp_port=mailbox.port, smtp_from="approvals@example.com",
        gateway_secret="test-secret", delivery_attempts=3, ack_wait_s=2.0,
    )  # fmt: skip


@pytest.fixture
async def stack(delivery_settings: Settings, hooks: Hooks) -> AsyncIterator[
    tuple[CommandService, ApprovalsClient]
]:  # fmt: skip
    async with (
        CommandService(delivery_settings) as commands,
        ProjectionService(delivery_settings),
        SpendCapService(delivery_settings),
    ):
        client = await ApprovalsClient.connect(delivery_settings.nats_url, "acme", 10.0)
        reply = await send(client, "configure", {"settings": workspace(hooks), "by": ADMIN})
        assert reply["ok"], reply
        try:
            yield commands, client
        finally:
            await client.close()


async def ask(client: ApprovalsClient, risk: str = "medium", n: int = 0) -> dict[str, Any]:
    reply = await send(client, "request", {
        "requested_by": "service:agent", "skill_name": "crm-sync", "skill_execution_id": f"e{n}",
        "title": f"Sync contacts #{n}", "summary": "40 contacts to HubSpot", "risk_level": risk,
        "action": {"kind": "crm_write", "mode": "live", "destination": "hubspot:list/42"},
        "proposed_payload": {"n": n}})  # fmt: skip
    assert reply["outcome"] == "approval_required", reply
    return reply["approval"]  # type: ignore[no-any-return]


def stored(commands: CommandService, kind: type[Any]) -> list[Any]:
    assert commands.app is not None
    found = (event_decoder.decode(n.state) for n in commands.app.notifications(1, 1_000_000))
    return [e for e in found if isinstance(e, kind)]


async def test_a_request_the_view_does_not_show_yet_is_delivered_once_it_does(
    delivery_settings: Settings, hooks: Hooks
) -> None:
    """The view is behind (its projector failing over): delivery waits for it, never drops the
    event. The projection answers queries but another instance holds the view's lease."""
    # Long enough that no redelivery after the ack wait hides an event dropped on the way.
    delivery_settings = msgspec.structs.replace(delivery_settings, ack_wait_s=60.0)
    async with (
        CommandService(delivery_settings) as commands,
        SpendCapService(delivery_settings),
        DeliveryService(delivery_settings),
    ):
        client = await ApprovalsClient.connect(delivery_settings.nats_url, "acme", 10.0)
        leases = await ensure_kv(client.nc.jetstream(), LEASES)
        await leases.create(view_lease(delivery_settings), b"another instance")
        try:
            async with ProjectionService(delivery_settings) as projection:
                assert projection.lease is not None
                assert not projection.lease.held.is_set()
                reply = await send(client, "configure",
                                   {"settings": workspace(hooks), "by": ADMIN})  # fmt: skip
                assert reply["ok"], reply
                tried = handled("delivery")
                asked = await ask(client, risk="low", n=1)
                # Delivery has looked for it (the view does not show it) and handed it back.
                await eventually(lambda: handled("delivery") > tried, within_s=30)
                assert stored(commands, Delivered) == []
                await leases.delete(view_lease(delivery_settings))  # the other instance is gone
                # Check: once the view shows it, the inbox gets it, once.
                await eventually(lambda: len(stored(commands, Delivered)) == 1, within_s=30)
            [delivered] = stored(commands, Delivered)
            assert (str(delivered.approval_id), delivered.channel) == (asked["id"], "inbox")
        finally:
            await client.close()


def handled(consumer: str) -> float:
    """How many events ``consumer`` finished or handed back (its Prometheus counters)."""
    return sum(
        REGISTRY.get_sample_value("approvals_consumer_events_total",
                                  {"consumer": consumer, "outcome": outcome}) or 0.0
        for outcome in ("done", "deferred", "retried")
    )  # fmt: skip


async def test_a_request_reaches_every_channel_once(
    stack: tuple[CommandService, ApprovalsClient], delivery_settings: Settings, hooks: Hooks,
    mailbox: Mailbox,
) -> None:  # fmt: skip
    commands, client = stack
    async with DeliveryService(delivery_settings):
        approval = await ask(client)
        await eventually(lambda: len(stored(commands, Delivered)) == 3)
    delivered = {e.channel: e for e in stored(commands, Delivered)}
    assert set(delivered) == {"inbox", "hooks", "email"}
    assert delivered["inbox"].external_ref == approval["web_url"]
    # Check: the webhook is signed per Standard Webhooks, with a stable id, and carries the facts.
    [(headers, _)] = hooks.on("/hooks")
    assert headers["webhook-id"] == f"{approval['id']}.hooks" == delivered["hooks"].external_ref
    verified = Webhook(SECRET).verify(_raw(hooks, "/hooks"), headers)
    assert verified["data"]["title"] == "Sync contacts #0"
    assert verified["data"]["action"]["destination"] == "hubspot:list/42"
    with pytest.raises(Exception, match="No matching signature"):
        Webhook("whsec_" + "A" * 32).verify(_raw(hooks, "/hooks"), headers)
    # Check: the email has both parts, the facts, and confirmation links (never a decision).
    [mail] = mailbox.messages
    assert mail["To"] == "approvers@example.com"
    assert mail["Message-ID"] == f"<{approval['id']}.email@approvals>"
    parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in mail.walk()
             if not p.is_multipart()}  # fmt: skip
    assert set(parts) == {"text/plain", "text/html"}
    assert "Destination: hubspot:list/42" in parts["text/plain"]
    assert f"{approval['web_url']}/confirm?token=" in parts["text/plain"]


async def test_the_channels_that_carried_a_request_are_told_how_it_ended(
    stack: tuple[CommandService, ApprovalsClient], delivery_settings: Settings, hooks: Hooks,
    mailbox: Mailbox,
) -> None:  # fmt: skip
    commands, client = stack
    async with DeliveryService(delivery_settings):
        approval = await ask(client, n=3)
        await eventually(lambda: len(stored(commands, Delivered)) == 3)
        rejected = await send(client, "reject", {"approval_id": approval["id"],
                                                 "approver": "user:ana",
                                                 "reason": "wrong list"})  # fmt: skip
        assert rejected["outcome"] == "rejected"
        await eventually(lambda: len(hooks.on("/hooks")) == 2 and len(mailbox.messages) == 2)
    # Check: the webhook gets the outcome as its own event, signed, with its own stable id.
    headers, told = hooks.on("/hooks")[1]
    assert told["type"] == "approval.rejected"
    assert (told["data"]["status"], told["data"]["decided_by"], told["data"]["reason"]) == (
        "rejected", "user:ana", "wrong list",
    )  # fmt: skip
    assert headers["webhook-id"] == f"{approval['id']}.hooks.rejected"
    # Check: the email thread gets the outcome, so nobody acts on the first message.
    first, second = mailbox.messages
    assert second["Subject"] == "[rejected] Sync contacts #3"
    assert second["In-Reply-To"] == first["Message-ID"]
    assert "No decision is needed any more" in second.get_payload()


def with_slow_hooks(hooks: Hooks) -> WorkspaceSettings:
    """Low-risk requests go to the inbox and to a webhook receiver that takes its time."""
    slow = ChannelConfig(kind="webhook", secret="TEST_HOOK_SECRET", target=f"{hooks.url}/slow")
    settings = workspace(hooks)
    return msgspec.structs.replace(settings, channels={"low": ("slow",)},
                                   channel={**settings.channel, "slow": slow})  # fmt: skip


async def outcome_handled(client: ApprovalsClient, approval_id: str, outcome: str) -> bool:
    """Whether the consumer ``delivery-outcomes`` has handled (acknowledged) the approval's
    ``outcome`` event."""
    js = client.nc.jetstream()
    try:
        last = await js.get_last_msg(STREAM, f"approvals.events.acme.{approval_id}.{outcome}")
    except NotFoundError:
        return False  # not on the bus yet
    info = await js.consumer_info(STREAM, "delivery-outcomes")
    return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= (last.seq or 0)


async def test_a_decision_while_a_channel_takes_the_request_still_reaches_that_channel(
    stack: tuple[CommandService, ApprovalsClient], delivery_settings: Settings, hooks: Hooks,
) -> None:  # fmt: skip
    """The decision lands while a slow receiver is taking the request, and the outcome notices
    are sent before that channel's ``delivered`` exists: it is recorded all the same, and told."""
    commands, client = stack
    assert (await send(client, "configure", {"settings": with_slow_hooks(hooks),
                                             "by": ADMIN}))["ok"]  # fmt: skip
    async with DeliveryService(delivery_settings):
        approval = await ask(client, risk="low", n=12)
        # Check: the receiver has the request and has not answered yet; now it is approved.
        await eventually(lambda: len(hooks.on("/slow")) == 1)
        approved = await send(client, "approve", {"approval_id": approval["id"],
                                                  "approver": "user:ana",
                                                  "digest": approval["digest"]})  # fmt: skip
        assert approved["outcome"] == "approved", approved
        # The outcome notices go out (to the inbox) before the slow channel is recorded.
        await eventually(lambda: outcome_handled(client, approval["id"], "approved"))
        assert [e.channel for e in stored(commands, Delivered)
                if str(e.approval_id) == approval["id"]] == ["inbox"]  # fmt: skip
        hooks.answer_slow.set()
        # Check: the channel that took the request is recorded, and is told how it ended.
        await eventually(lambda: len(hooks.on("/slow")) >= 2, within_s=30)
        mine = [e for e in stored(commands, Delivered) if str(e.approval_id) == approval["id"]]
        assert [e.channel for e in mine] == ["inbox", "slow"]
    [decided] = [e for e in stored(commands, Approved) if str(e.approval_id) == approval["id"]]
    assert mine[-1].version > decided.version  # recorded after the decision
    # Check: each once, the request first (redeliveries while the receiver was slow sent none).
    told = [(h["webhook-id"], b["type"]) for h, b in hooks.on("/slow")]
    assert told == [(f"{approval['id']}.slow", "approval.requested"),
                    (f"{approval['id']}.slow.approved", "approval.approved")]  # fmt: skip


@pytest.mark.timeout(180)
async def test_a_channel_that_took_the_request_before_a_crash_is_told_the_outcome(
    stack: tuple[CommandService, ApprovalsClient], delivery_settings: Settings, hooks: Hooks,
) -> None:  # fmt: skip
    """The delivery service is killed while a receiver takes the request (it may have taken
    it, nothing says so), and the request is decided before it comes back: the channel is
    finished, recorded, and told the outcome, once."""
    commands, client = stack
    assert (await send(client, "configure", {"settings": with_slow_hooks(hooks),
                                             "by": ADMIN}))["ok"]  # fmt: skip
    env = {**os.environ, "NATS_URL": delivery_settings.nats_url, "APPROVALS_ACK_WAIT_S": "2",
           "APPROVALS_WEBHOOK_ALLOW": "127.0.0.1/32", "APPROVALS_GATEWAY_SECRET": "test-secret",
           "TEST_HOOK_SECRET": SECRET}  # fmt: skip
    approvals = os.path.join(os.path.dirname(sys.executable), "approvals")
    first = await asyncio.create_subprocess_exec(approvals, "serve", "--only", "delivery",
                                                 env=env)  # fmt: skip
    try:
        approval = await ask(client, risk="low", n=13)
        await eventually(lambda: len(hooks.on("/slow")) == 1, within_s=60)
    finally:
        first.send_signal(signal.SIGKILL)  # while the receiver takes the request
        await first.wait()
    hooks.answer_slow.set()
    rejection = {"approval_id": approval["id"], "approver": "user:ana", "reason": "not now"}
    rejected = await send(client, "reject", rejection)
    assert rejected["outcome"] == "rejected", rejected
    async with DeliveryService(delivery_settings):
        # Check: the slow channel is recorded and told, once the request's event comes back.
        await eventually(lambda: any(b["type"] == "approval.rejected"
                                     for _, b in hooks.on("/slow")), within_s=60)  # fmt: skip
    mine = Counter(e.channel for e in stored(commands, Delivered)
                   if str(e.approval_id) == approval["id"])  # fmt: skip
    assert mine == {"inbox": 1, "slow": 1}
    # Check: the request went again under its one id (the receiver drops the repeat), the
    # outcome once.
    told = Counter((h["webhook-id"], b["type"]) for h, b in hooks.on("/slow"))
    assert set(told) == {(f"{approval['id']}.slow", "approval.requested"),
                         (f"{approval['id']}.slow.rejected", "approval.rejected")}  # fmt: skip
    assert told[(f"{approval['id']}.slow.rejected", "approval.rejected")] == 1


async def test_the_webhook_is_told_a_rejection_asks_for_a_new_request(
    stack: tuple[CommandService, ApprovalsClient], delivery_settings: Settings, hooks: Hooks,
) -> None:  # fmt: skip
    commands, client = stack
    async with DeliveryService(delivery_settings):
        approval = await ask(client, n=4)
        await eventually(lambda: len(stored(commands, Delivered)) == 3)
        rejected = await send(client, "reject", {"approval_id": approval["id"],
                                                 "approver": "user:ana", "reason": "wrong list",
                                                 "rerun": True})  # fmt: skip
        assert rejected["outcome"] == "rejected"
        await eventually(lambda: len(hooks.on("/hooks")) == 2)
    # Check: the outcome carries why, and that the person asks for a new request.
    _, told = hooks.on("/hooks")[1]
    assert told["type"] == "approval.rejected"
    assert (told["data"]["reason"], told["data"]["rerun"]) == ("wrong list", True)


async def test_the_webhook_is_told_an_answer_instead_of_a_decision_with_its_message(
    stack: tuple[CommandService, ApprovalsClient], delivery_settings: Settings, hooks: Hooks,
) -> None:  # fmt: skip
    commands, client = stack
    async with DeliveryService(delivery_settings):
        approval = await ask(client, n=5)
        await eventually(lambda: len(stored(commands, Delivered)) == 3)
        answered = await send(client, "respond", {"approval_id": approval["id"],
                                                  "approver": "user:ana",
                                                  "message": "Which list?"})  # fmt: skip
        assert answered["outcome"] == "responded", answered
        await eventually(lambda: len(hooks.on("/hooks")) == 2)
    # Check: the request's end is told like a rejection's, the message as its reason.
    _, told = hooks.on("/hooks")[1]
    assert told["type"] == "approval.responded"
    assert (told["data"]["status"], told["data"]["reason"], told["data"]["decided_by"]) == (
        "responded", "Which list?", "user:ana",
    )  # fmt: skip


def sent(channel: str, outcome: str) -> float:
    """The delivery service's Prometheus counter of sends to ``channel`` ending in ``outcome``."""
    labels = {"channel": channel, "outcome": outcome}
    return REGISTRY.get_sample_value("approvals_deliveries_total", labels) or 0.0


def _raw(hooks: Hooks, path: str) -> bytes:
    [body] = [b for p, _, b in hooks.received if p == path]
    return body


async def test_a_channel_that_will_not_take_it_is_recorded_as_failed(
    stack: tuple[CommandService, ApprovalsClient], delivery_settings: Settings, hooks: Hooks,
) -> None:  # fmt: skip
    commands, client = stack
    before = {o: sent("webhook", o) for o in ("delivered", "retried", "failed")}
    async with DeliveryService(delivery_settings):
        down = await ask(client, risk="high", n=1)
        private = await ask(client, risk="critical", n=2)
        await eventually(lambda: len(stored(commands, DeliveryFailed)) == 2)
    # Check: /metrics counts the two failures and the two retries before the first one.
    counts = {o: sent("webhook", o) - before[o] for o in ("delivered", "retried", "failed")}
    assert counts == {"delivered": 0, "retried": 2, "failed": 2}
    failed = {str(e.approval_id): e for e in stored(commands, DeliveryFailed)}
    # Check: a 503 is retried (three attempts in all), then recorded with why.
    assert (failed[down["id"]].attempts, failed[down["id"]].channel) == (3, "down")
    assert "503" in failed[down["id"]].error
    assert len(hooks.on("/down")) == 3
    # Check: a private address is refused at once (SSRF), never called.
    assert failed[private["id"]].attempts == 1
    assert "not public" in failed[private["id"]].error
    # Check: the inbox still has both.
    inbox = {str(e.approval_id) for e in stored(commands, Delivered) if e.channel == "inbox"}
    assert inbox == {down["id"], private["id"]}


@pytest.mark.timeout(180)
async def test_a_killed_delivery_service_delivers_everything_once(
    stack: tuple[CommandService, ApprovalsClient], delivery_settings: Settings, hooks: Hooks,
    mailbox: Mailbox,
) -> None:  # fmt: skip
    commands, client = stack
    env = {**os.environ, "NATS_URL": delivery_settings.nats_url, "APPROVALS_ACK_WAIT_S": "2",
           "APPROVALS_WEBHOOK_ALLOW": "127.0.0.1/32", "APPROVALS_SMTP_HOST": "127.0.0.1",
           "APPROVALS_SMTP_PORT": str(mailbox.port), "APPROVALS_GATEWAY_SECRET": "test-secret",
           "TEST_HOOK_SECRET": SECRET}  # fmt: skip
    approvals = os.path.join(os.path.dirname(sys.executable), "approvals")
    command = [approvals, "serve", "--only", "delivery"]
    first = await asyncio.create_subprocess_exec(*command, env=env)
    try:
        asked = [await ask(client, n=i) for i in range(40)]
        await eventually(lambda: len(stored(commands, Delivered)) >= 15, within_s=60)
    finally:
        first.send_signal(signal.SIGKILL)  # mid-batch
        await first.wait()
    done_before = {(str(e.approval_id), e.channel) for e in stored(commands, Delivered)}
    second = await asyncio.create_subprocess_exec(*command, env=env)
    try:
        await eventually(lambda: len(stored(commands, Delivered)) >= 120, within_s=90)
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()
    # Check: every channel of every request recorded exactly once.
    recorded = Counter((str(e.approval_id), e.channel) for e in stored(commands, Delivered))
    expected = {(a["id"], c) for a in asked for c in ("inbox", "hooks", "email")}
    assert set(recorded) == expected
    assert set(recorded.values()) == {1}
    # Check: each receiver got each one, under one stable id (by which it drops a repeat).
    webhook_ids = Counter(h["webhook-id"] for h, _ in hooks.on("/hooks"))
    assert set(webhook_ids) == {f"{a['id']}.hooks" for a in asked}
    mail_ids = Counter(m["Message-ID"] for m in mailbox.messages)
    assert set(mail_ids) == {f"<{a['id']}.email@approvals>" for a in asked}
    # Check: nothing recorded before the kill was sent again; only sends in flight at the kill
    # (the channel took it, the record was not yet written) were repeated, under the same id.
    sent = {(i.rsplit(".", 1)[0], "hooks"): n for i, n in webhook_ids.items()}
    sent |= {(i.strip("<>").split(".")[0], "email"): n for i, n in mail_ids.items()}
    assert all(sent[key] == 1 for key in done_before if key[1] != "inbox"), sent
    repeated = [key for key, n in sent.items() if n > 1]
    assert len(repeated) <= 2 * 32, repeated  # at most the service's concurrency per channel


# -- Slack -------------------------------------------------------------------------------------

SLACK_SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


class FakeSlack:
    """Answers chat.postMessage and chat.update as Slack's Web API does, and records them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["content-length"]))
                body = json.loads(raw) if raw.startswith(b"{") else dict(parse_qsl(raw.decode()))
                method = self.path.rsplit("/", 1)[-1]
                fake.calls.append((method, dict(self.headers), body))
                answer = {"ok": True, "channel": body.get("channel"),
                          "ts": body.get("ts") or f"1700000000.{len(fake.calls):06d}",
                          "message": {"text": body.get("text")}}  # fmt: skip
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, method: str) -> list[dict[str, Any]]:
        return [body for m, _, body in self.calls if m == method]


def slack_callback(payload: dict[str, Any], *, age_s: int = 0, secret: str = SLACK_SIGNING_SECRET
                   ) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    """A block action signed the way Slack signs one."""
    body = urlencode({"payload": json.dumps(payload)})
    timestamp = str(int(time.time()) - age_s)
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256)
    return body.encode(), {"X-Slack-Request-Timestamp": timestamp,
                           "X-Slack-Signature": f"v0={digest.hexdigest()}",
                           "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip


@contextlib.asynccontextmanager
async def slack_door(
    client: ApprovalsClient, delivery_settings: Settings, **workspace_settings: Any
) -> AsyncIterator[tuple[FakeSlack, GatewayService]]:
    """A workspace whose high-risk requests go to Slack channel C0123 (user:ana is Slack's
    U111), the delivery service and the gateway taking Slack's callbacks, against a fake Slack
    API that speaks its format; ``workspace_settings``: more of the workspace's settings."""
    slack = FakeSlack()
    os.environ["TEST_SLACK_TOKEN"] = "xoxb-test"
    settings = msgspec.structs.replace(
        delivery_settings, slack_api_url=slack.url, slack_signing_secret=SLACK_SIGNING_SECRET,
        gateway_port=free_port(),
    )  # fmt: skip
    with_slack = msgspec.structs.replace(
        workspace(Hooks()),
        members={ADMIN: Member(roles=("admin",)), "service:agent": Member(roles=("requester",)),
                 "user:ana": Member(roles=("approver",), aliases=("user:slack.U111",))},
        channels={"high": ("slack",)},
        channel={"slack": ChannelConfig(secret="TEST_SLACK_TOKEN", target="C0123")},
        **workspace_settings,
    )  # fmt: skip
    assert (await send(client, "configure", {"settings": with_slack, "by": ADMIN}))["ok"]
    gateway = GatewayService(settings)
    async with DeliveryService(settings):
        await gateway.start()
        try:
            yield slack, gateway
        finally:
            await gateway.stop()
            slack.server.shutdown()


async def test_a_slack_button_decides_verified_and_the_message_shows_the_outcome(
    stack: tuple[CommandService, ApprovalsClient], delivery_settings: Settings,
) -> None:  # fmt: skip
    commands, client = stack
    async with slack_door(client, delivery_settings) as (slack, gateway):
        approval = await ask(client, risk="high", n=7)
        await eventually(lambda: len(slack.of("chat.postMessage")) == 1)
        [posted] = slack.of("chat.postMessage")
        assert posted["channel"] == "C0123"
        [buttons] = [b for b in posted["blocks"] if b["type"] == "actions"]
        approve = next(e for e in buttons["elements"] if e["action_id"] == "approve")
        payload = {"type": "block_actions", "user": {"id": "U111"},
                       "channel": {"id": "C0123"}, "message": {"ts": "1700000000.000001"},
                       "actions": [approve]}  # fmt: skip
        url = f"{gateway.url}/integrations/slack/interactions"
        async with httpx.AsyncClient(timeout=30) as http:
            # Check: forgeries are refused and decide nothing.
            forged = [
                slack_callback(payload, secret="not-the-secret"),
                slack_callback(payload, age_s=600),  # a replay, ten minutes on
                slack_callback({**payload, "user": {"id": "U999"}}),  # nobody we know
                slack_callback({**payload, "channel": {"id": "C9999"}}),  # another channel
            ]
            statuses = [(await http.post(url, content=b, headers=h)).status_code
                            for b, h in forged]  # fmt: skip
            assert statuses == [401, 401, 403, 403]
            assert approval_of(commands, approval["id"]).status == "pending"
            body, headers = slack_callback(payload)
            clicked = await http.post(url, content=body, headers=headers)
        assert clicked.status_code == 200, clicked.text
        assert clicked.json()["outcome"] == "approved"
        decided = approval_of(commands, approval["id"])
        assert (decided.status, decided.decided_by) == ("approved", "user:slack.U111")
        assert decided.votes == ("user:ana",)
        assert door_of(commands, approval["id"], "approved") == Via(
            channel="slack", auth="slack_signature", ref="C0123/U111"
        )
        # Check: the message now shows the outcome and who decided, with no buttons (edited
        # by the click's answer, and again, the same, by the delivery service's notice).
        updated = slack.of("chat.update")[0]
        assert (updated["channel"], updated["ts"]) == ("C0123", "1700000000.000001")
        assert "approved by user:slack.U111" in updated["text"]
        assert all(b["type"] != "actions" for b in updated["blocks"])


def door_of(commands: CommandService, approval_id: str, event_type: str) -> Via | None:
    """The door the stored event of that type came in by."""
    assert commands.app is not None
    found = [event_decoder.decode(n.state) for n in commands.app.notifications(1, 100_000)]
    [event] = [e for e in found if str(e.originator_id) == approval_id
               and e.event_type == event_type]  # fmt: skip
    return event.via


def approval_of(commands: CommandService, approval_id: str) -> Any:
    assert commands.app is not None
    return commands.app.get(UUID(approval_id))


async def test_reminders_and_escalation_fire_on_time_and_stop_at_the_decision(
    stack: tuple[CommandService, ApprovalsClient], delivery_settings: Settings, hooks: Hooks,
    mailbox: Mailbox,
) -> None:  # fmt: skip
    commands, client = stack
    urgent = msgspec.structs.replace(
        workspace(hooks),
        members={ADMIN: Member(roles=("admin",)), "service:agent": Member(roles=("requester",)),
                 "user:ana": Member(roles=("approver",)),
                 "user:carol": Member(roles=("approver",))},
        groups={"bosses": ("user:ana",), "leads": ("user:carol",)},
        approvers={"critical": ("bosses",)},
        channels={"critical": ("inbox", "hooks")},
        reminders=Reminders(remind_after_s=1, escalate_after_s=2, escalate_to="leads",
                            escalate_channels=("email",)),
    )  # fmt: skip
    assert (await send(client, "configure", {"settings": urgent, "by": ADMIN}))["ok"]
    async with DeliveryService(delivery_settings):
        approval = await ask(client, risk="critical", n=9)
        vote = {"approval_id": approval["id"], "approver": "user:carol",
                "digest": approval["digest"]}  # fmt: skip
        # Check: before escalation carol (not in bosses) may not decide a critical request.
        refused = await send(client, "approve", vote)
        assert refused["error"]["details"]["rule"] == "approvers:critical", refused
        await eventually(lambda: len(stored(commands, Reminded)) == 1, within_s=20)
        await eventually(lambda: len(stored(commands, Escalated)) == 1, within_s=20)
        # Check: the reminder went to the request's channels, the escalation to its channels.
        await eventually(lambda: len(hooks.on("/hooks")) == 2 and len(mailbox.messages) == 1)
        _, reminder = hooks.on("/hooks")[1]
        assert reminder["data"]["title"] == "Reminder: Sync contacts #9"
        assert mailbox.messages[0]["Subject"] == "[approval needed] Escalated to leads: " \
            "Sync contacts #9"  # fmt: skip
        # Check: now the escalation group may decide it.
        approved = await send(client, "approve", vote)
        assert approved["outcome"] == "approved", approved
    [escalated] = stored(commands, Escalated)
    assert escalated.group == "leads"
    [reminded] = stored(commands, Reminded)
    # Check: on time: not before they were due, and within the scheduler's tick (and a margin).
    [asked] = [e for e in stored(commands, Requested) if str(e.approval_id) == approval["id"]]
    assert timedelta(seconds=1) <= reminded.occurred_at - asked.occurred_at < timedelta(seconds=4)
    assert timedelta(seconds=2) <= escalated.occurred_at - asked.occurred_at < timedelta(seconds=5)
    # Check: nothing reminds after the decision.
    after = await send(client, "remind", {"approval_id": approval["id"]})
    assert after["error"]["code"] == "already_decided"


# -- Discord -----------------------------------------------------------------------------------


class FakeDiscord:
    """Answers POST and PATCH of channel messages as Discord's HTTP API does, and records them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str], dict[str, Any]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                fake.calls.append((self.command, self.path, dict(self.headers), body))
                channel = self.path.split("/channels/")[1].split("/")[0]
                data = json.dumps({"id": f"M{len(fake.calls)}", "channel_id": channel}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_PATCH = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v10"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def discord_callback(key: Ed25519PrivateKey, interaction: dict[str, Any], *, age_s: int = 0
                     ) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    """An interaction signed the way Discord signs one."""
    body = json.dumps(interaction).encode()
    timestamp = str(int(time.time()) - age_s)
    signature = key.sign(timestamp.encode() + body).hex()
    return body, {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": timestamp,
                  "Content-Type": "application/json"}  # fmt: skip


async def test_a_discord_button_decides_verified_and_the_message_shows_the_outcome(
    stack: tuple[CommandService, ApprovalsClient], delivery_settings: Settings,
) -> None:  # fmt: skip
    commands, client = stack
    discord, key = FakeDiscord(), Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw).hex()  # fmt: skip
    os.environ["TEST_DISCORD_TOKEN"] = "bot-token"
    settings = msgspec.structs.replace(
        delivery_settings, discord_api_url=discord.url, discord_public_key=public,
        gateway_port=free_port(),
    )  # fmt: skip
    with_discord = msgspec.structs.replace(
        workspace(Hooks()),
        members={ADMIN: Member(roles=("admin",)), "service:agent": Member(roles=("requester",)),
                 "user:ana": Member(roles=("approver",), aliases=("user:discord.42",))},
        channels={"high": ("discord",)},
        channel={"discord": ChannelConfig(secret="TEST_DISCORD_TOKEN", target="900")},
    )  # fmt: skip
    assert (await send(client, "configure", {"settings": with_discord, "by": ADMIN}))["ok"]
    gateway = GatewayService(settings)
    async with DeliveryService(settings):
        await gateway.start()
        try:
            approval = await ask(client, risk="high", n=8)
            await eventually(lambda: len(discord.calls) == 1)
            [(method, path, headers, posted)] = discord.calls
            assert (method, path) == ("POST", "/api/v10/channels/900/messages")
            assert headers["Authorization"] == "Bot bot-token"
            buttons = posted["components"][0]["components"]
            approve = next(b for b in buttons if b.get("label") == "Approve")
            click = {"type": 3, "channel_id": "900", "member": {"user": {"id": "42"}},
                     "data": {"custom_id": approve["custom_id"]}}  # fmt: skip
            url = f"{gateway.url}/integrations/discord/interactions"
            async with httpx.AsyncClient(timeout=30) as http:
                # Check: Discord's PING is answered; forgeries are refused and decide nothing.
                body, signed = discord_callback(key, {"type": 1})
                assert (await http.post(url, content=body, headers=signed)).json() == {"type": 1}
                other = Ed25519PrivateKey.generate()
                forged = [
                    discord_callback(other, click),  # not the application's key
                    discord_callback(key, click, age_s=600),  # a replay
                    discord_callback(key, {**click, "member": {"user": {"id": "7"}}}),
                    discord_callback(key, {**click, "channel_id": "901"}),
                ]
                statuses = [(await http.post(url, content=b, headers=h)).status_code
                            for b, h in forged]  # fmt: skip
                assert statuses == [401, 401, 403, 403]
                assert approval_of(commands, approval["id"]).status == "pending"
                body, signed = discord_callback(key, click)
                clicked = await http.post(url, content=body, headers=signed)
            # Check: decided as the member; the answer updates the message, buttons gone.
            assert clicked.status_code == 200, clicked.text
            assert clicked.json()["type"] == 7
            assert "approved by user:discord.42" in clicked.json()["data"]["content"]
            assert clicked.json()["data"]["components"] == []
            decided = approval_of(commands, approval["id"])
            assert (decided.status, decided.votes) == ("approved", ("user:ana",))
            assert door_of(commands, approval["id"], "approved") == Via(
                channel="discord", auth="discord_signature", ref="900/42"
            )
            # Check: the outcome notice edits the delivered message too.
            await eventually(lambda: any(c[0] == "PATCH" for c in discord.calls))
            [(_, patched_path, _, patched)] = [c for c in discord.calls if c[0] == "PATCH"]
            assert patched_path == "/api/v10/channels/900/messages/M1"
            assert patched["components"] == []
        finally:
            await gateway.stop()
            discord.server.shutdown()
