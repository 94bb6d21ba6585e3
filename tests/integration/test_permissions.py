"""deploy/nats/auth.conf on a real nats-server: every service works as its own user, and every
user is refused what is not its own (another workspace, decisions, the admin API, destroying the
streams). The gateway authenticates with an NKey; TLS is exercised in its own test."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import secrets
import shutil
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import nats
import nkeys
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nats.errors import TimeoutError as NatsTimeout

from approvals.client import ApprovalsClient
from approvals.projections.status.service import ProjectionService
from approvals.schemas.subjects import STREAM
from approvals.services.approvals.service import CommandService
from approvals.services.delivery.service import DeliveryService
from approvals.services.gateway.app import GatewayService
from approvals.services.runtime.bus import connect_options
from approvals.services.runtime.natsserver import NatsServer
from approvals.services.runtime.ops import Ops
from approvals.services.runtime.settings import Settings
from approvals.services.spendcap.service import SpendCapService
from tests.e2e.devserver import free_port
from tests.helpers import eventually
from tests.integration.test_audit import APPROVALS
from tests.workspaces import ADMIN, SETTINGS

if TYPE_CHECKING:
    from collections.abc import Iterator

AUTH = Path(__file__).parents[2] / "deploy" / "nats" / "auth.conf"
USERS = ("commands", "projection", "spendcap", "delivery", "admin", "acme", "globex")


@dataclass
class Secured:
    server: NatsServer
    passwords: dict[str, str]
    gateway_seed: Path
    tmp: Path
    errors: dict[str, list[str]] = field(default_factory=dict)

    def settings(self, user: str, **changes: Any) -> Settings:
        base = Settings(
            nats_url=self.server.url,
            sqlite_path=self.tmp / "approvals.db",
            view_sqlite_path=self.tmp / "status.db",
            checkpoint_interval_s=0.5,
        )
        if user == "gateway":
            return msgspec.structs.replace(base, nats_nkey_seed=self.gateway_seed, **changes)
        prefix = f"_INBOX_{user}" if user in ("acme", "globex") else None
        return msgspec.structs.replace(
            base,
            nats_user=user,
            nats_password=self.passwords[user],
            nats_inbox_prefix=prefix,
            **changes,
        )

    async def connect(self, user: str) -> nats.NATS:
        """A plain connection as ``user`` that records the server's refusals."""
        seen = self.errors.setdefault(user, [])

        async def record(error: Exception) -> None:
            seen.append(str(error))

        return await nats.connect(
            self.server.url, error_cb=record, **connect_options(self.settings(user))
        )

    async def refused(self, user: str, what: str) -> None:
        """Wait for the server to refuse ``what`` (a subject) to ``user``."""
        try:
            await eventually(
                lambda: any(what.lower() in e.lower() for e in self.errors.get(user, [])), 10
            )
        except AssertionError:
            raise AssertionError(f"{what} not refused to {user}: {self.errors.get(user)}") from None

    def violations(self) -> list[str]:
        return [line for line in self.server.log if "Violation" in line]


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    shutil.copy(AUTH, tmp_path / "auth.conf")
    (tmp_path / "server.conf").write_text('include "auth.conf"\n')
    passwords = {
        user: "p" + secrets.token_hex(16) for user in USERS
    }  # a letter first: see auth.conf
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    seed_file = tmp_path / "gateway.nk"
    seed_file.write_bytes(seed)
    env = {
        **os.environ,
        "APPROVALS_GATEWAY_NKEY": nkeys.from_seed(seed).public_key.decode(),
        **{f"APPROVALS_{u.upper()}_PASSWORD": p for u, p in passwords.items()},
    }
    with NatsServer(tmp_path / "js", config=tmp_path / "server.conf", env=env) as server:
        yield Secured(server, passwords, seed_file, tmp_path)


async def client(secured: Secured, user: str, workspace: str) -> ApprovalsClient:
    settings = secured.settings(user)
    return await ApprovalsClient.connect(
        settings.nats_url, workspace, 10.0, options=connect_options(settings)
    )


ACTION = {"kind": "provider_call", "mode": "live", "provider": "clearbit", "max_credits": 10}


def request_body(title: str) -> dict[str, Any]:
    return {
        "requested_by": "service:enricher",
        "skill_name": "enrich",
        "skill_execution_id": title,
        "title": title,
        "summary": "rows",
        "risk_level": "low",
        "action": ACTION,
    }


async def test_every_service_works_as_its_own_user_and_nothing_is_refused(
    secured: Secured,
) -> None:
    port = free_port()
    services = [
        CommandService(secured.settings("commands")),
        ProjectionService(secured.settings("projection")),
        SpendCapService(secured.settings("spendcap")),
        DeliveryService(secured.settings("delivery")),
    ]
    gateway = GatewayService(secured.settings("gateway", gateway_port=port))
    for service in services:
        await service.start()
    await gateway.start()
    admin = await client(secured, "admin", "acme")
    acme = await client(secured, "acme", "acme")
    try:
        configured = await admin.send("configure", {"settings": SETTINGS, "by": ADMIN})
        assert configured.ok, configured
        secret = secrets.token_urlsafe(24)
        key = await admin.send(
            "create_api_key",
            {
                "key_id": "permissionskey1",
                "secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
                "actor": "user:ana",
                "by": ADMIN,
            },
        )
        assert key.ok, key
        asked = await acme.send("request", request_body("as acme"))
        assert asked.ok, asked
        assert asked.approval is not None
        approval = asked.approval
        # The spend-cap and delivery services did their part, as their own users.
        history: list[str] = []

        async def checked_and_delivered() -> bool:
            reply = await acme.query("history", {"approval_id": str(approval.id)})
            history[:] = [e["type"] for e in msgspec.json.decode(reply).get("timeline", [])]
            return {"spend_checked", "delivered"} <= set(history)

        await eventually(checked_and_delivered)
        # A person decides through the gateway (an NKey user).
        async with httpx.AsyncClient(timeout=30) as http:
            decided = await http.post(
                f"http://127.0.0.1:{port}/v1/workspaces/acme/approvals/{approval.id}/approve",
                json={"digest": approval.digest},
                headers={"Authorization": f"Bearer apk_permissionskey1.{secret}"},
            )
        assert decided.status_code == 200, decided.text
        redeemed = await acme.send(
            "redeem",
            {
                "approval_id": str(approval.id),
                "digest": approval.digest,
                "executor": "service:enricher",
            },
        )
        assert redeemed.ok, redeemed

        async def shown_approved() -> bool:  # the view follows the store a moment later
            return (await acme.get(str(approval.id))).status == "approved"

        await eventually(shown_approved)
        assert secured.violations() == []
    finally:
        await acme.close()
        await admin.close()
        await gateway.stop()
        for service in reversed(services):
            await service.stop()


async def test_every_service_is_ready_with_the_permissions_deploy_gives_it(
    secured: Secured,
) -> None:
    services: list[Any] = [
        CommandService(secured.settings("commands")),
        ProjectionService(secured.settings("projection")),
        SpendCapService(secured.settings("spendcap")),
        DeliveryService(secured.settings("delivery")),
        GatewayService(secured.settings("gateway", gateway_port=free_port())),
    ]
    for service in services:
        await service.start()
    try:
        ops = Ops(secured.settings("admin"), services)  # what `serve`'s /readyz asks
        ops.started = True
        # Check: every service answers its readiness probe as its own bus user...
        assert await ops.readiness() == {
            "commands": True, "projection": True, "spendcap": True, "delivery": True,
            "gateway": True}  # fmt: skip
        # ...and asked for nothing its user may not do.
        assert secured.violations() == []
    finally:
        for service in reversed(services):
            await service.stop()


async def events_cli(secured: Secured, user: str, *args: str) -> tuple[int, str, str]:
    """`approvals --json ARGS` as ``user``, with the credentials and inbox prefix of a caller."""
    env = {**os.environ, "NATS_URL": secured.server.url, "APPROVALS_NATS_USER": user,
           "APPROVALS_NATS_PASSWORD": secured.passwords[user],
           "APPROVALS_NATS_INBOX_PREFIX": f"_INBOX_{user}"}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        APPROVALS, "--json", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_workspace_caller_reads_its_events_and_is_told_what_is_forbidden(
    secured: Secured,
) -> None:
    async with CommandService(secured.settings("commands")):
        admin = await client(secured, "admin", "acme")
        acme = await client(secured, "acme", "acme")
        try:
            for workspace in ("acme", "globex"):
                admin.workspace = workspace
                assert (await admin.send("configure", {"settings": SETTINGS, "by": ADMIN})).ok
            theirs = (await admin.send("request", request_body("globex's"))).approval
            mine = (await acme.send("request", request_body("mine"))).approval
            assert theirs is not None  # globex has events too: none of them may be shown
            assert mine is not None
            # Check: the caller lists its workspace's events, and one approval's, as JSON lines.
            code, out, err = await events_cli(secured, "acme", "-w", "acme", "events")
            assert code == 0, out + err
            listed = [msgspec.json.decode(line)["event"] for line in out.splitlines()]
            assert {e["workspace_id"] for e in listed} == {"acme"}
            assert "requested" in {e["type"] for e in listed}
            code, out, err = await events_cli(
                secured, "acme", "-w", "acme", "events", "--approval", str(mine.id)
            )
            assert code == 0, out + err
            listed = [msgspec.json.decode(line)["event"] for line in out.splitlines()]
            assert listed
            assert {e.get("approval_id") for e in listed} == {str(mine.id)}
            assert secured.violations() == []
            # Check: another workspace's events are refused as forbidden, naming the subject,
            # not reported as an unreachable bus.
            code, out, err = await events_cli(secured, "acme", "-w", "globex", "events")
            assert code != 0
            error = msgspec.json.decode(out)["error"]
            assert error["code"] == "forbidden", error
            assert "$JS.API.CONSUMER.CREATE.APPROVALS_EVENTS." in error["message"]
            assert ".approvals.events.globex." in error["message"]
            # Check: any command the caller may not send is forbidden too, at once.
            code, out, err = await events_cli(
                secured, "acme", "-w", "acme", "approve", str(mine.id), "--approver",
                "user:ana", "--digest", mine.digest,
            )  # fmt: skip
            error = msgspec.json.decode(out)["error"]
            assert (code, error["code"]) == (1, "forbidden"), out + err
            assert "approvals.cmd.acme.approve" in error["message"]
            # Check: it replays its workspace from the stream, and only its own.
            code, out, err = await events_cli(
                secured, "acme", "audit", "replay", "--source", "stream", "--workspace", "acme"
            )
            assert code == 0, out + err
            assert msgspec.json.decode(out)["events"] >= 2
            code, out, err = await events_cli(
                secured, "acme", "audit", "replay", "--source", "stream", "--workspace", "globex"
            )
            assert msgspec.json.decode(out)["error"]["code"] == "forbidden", out + err
            # Check: --follow shows a new request of its workspace as it is stored.
            env = {**os.environ, "NATS_URL": secured.server.url, "APPROVALS_NATS_USER": "acme",
                   "APPROVALS_NATS_PASSWORD": secured.passwords["acme"],
                   "APPROVALS_NATS_INBOX_PREFIX": "_INBOX_acme"}  # fmt: skip
            follower = await asyncio.create_subprocess_exec(
                APPROVALS, "--json", "-w", "acme", "events", "--follow", "--approval", "*",
                env=env, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                assert follower.stdout is not None
                later = (await acme.send("request", request_body("later"))).approval
                assert later is not None
                while True:
                    line = await asyncio.wait_for(follower.stdout.readline(), 30)
                    assert line, "the follower ended"
                    if msgspec.json.decode(line)["event"].get("approval_id") == str(later.id):
                        break
            finally:
                follower.terminate()
                await follower.wait()
            refused = secured.violations()  # globex's events (twice), a decision
            assert len(refused) == 3
            assert sum(".approvals.events.globex." in line for line in refused) == 2
        finally:
            await acme.close()
            await admin.close()


async def test_the_langgraph_follower_resumes_a_thread_with_a_workspace_callers_rights(
    secured: Secured,
) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from approvals.client.integrations.langgraph import follow
    from tests.e2e.langgraph_app import build

    effects = secured.tmp / "effects.jsonl"
    async with (
        CommandService(secured.settings("commands")),
        ProjectionService(secured.settings("projection")),
        AsyncSqliteSaver.from_conn_string(str(secured.tmp / "checkpoints.db")) as saver,
    ):
        admin = await client(secured, "admin", "acme")
        acme = await client(secured, "acme", "acme")
        try:
            assert (await admin.send("configure", {"settings": SETTINGS, "by": ADMIN})).ok
            graph = build(acme, saver, effects, requested_by="service:enricher")
            config: Any = {"configurable": {"thread_id": "t-acme"}}
            paused = await graph.ainvoke({"rows": [4]}, config)
            asked = paused["__interrupt__"][0].value

            async def shown() -> bool:
                return (await acme.get(asked["approval_id"])).digest == asked["digest"]

            await eventually(shown)
            body = {"approval_id": asked["approval_id"], "approver": "user:ana",
                    "digest": asked["digest"]}  # fmt: skip
            assert (await admin.send("approve", body)).ok
            # Check: the follower, as the workspace's caller, reads the ending and resumes.
            async with contextlib.aclosing(follow(graph, acme)) as followed:
                async for one in followed:
                    if one.approval_id == asked["approval_id"]:
                        assert one.result is not None
                        assert one.result["result"] == "sent [4]"
                        break
            assert effects.read_text().splitlines() == ['{"rows": [4]}']
            assert secured.violations() == []
        finally:
            await acme.close()
            await admin.close()


async def test_a_workspace_caller_is_refused_everything_not_its_own(secured: Secured) -> None:
    async with CommandService(secured.settings("commands")) as commands:
        admin = await client(secured, "admin", "globex")
        for workspace in ("acme", "globex"):
            admin.workspace = workspace
            assert (await admin.send("configure", {"settings": SETTINGS, "by": ADMIN})).ok
        theirs = (await admin.send("request", request_body("globex's"))).approval
        assert theirs is not None
        acme = await secured.connect("acme")
        try:
            # Its own workspace: yes.
            reply = await acme.request(
                "approvals.cmd.acme.check", msgspec.json.encode(request_body("mine")), timeout=5
            )
            assert msgspec.json.decode(reply.data)["ok"]
            js = acme.jetstream()
            mine = await js.add_consumer(
                STREAM,
                name="acme-reader",
                filter_subject="approvals.events.acme.>",
                deliver_subject="_INBOX_acme.reader",
                inactive_threshold=30.0,
            )
            assert mine.name == "acme-reader"
            # Another workspace's commands, a decision, another's events, a consumer on
            # another's events, the admin API, destroying the stream: no.
            for subject in (
                "approvals.cmd.globex.request",
                "approvals.cmd.acme.approve",
                "approvals.cmd.acme.respond",
                "approvals.cmd.acme.configure",
                "approvals.query.globex.get",
                "approvals.events.acme.forged.requested",
            ):
                await acme.publish(subject, b"{}")
                await secured.refused("acme", subject)
            await acme.subscribe("approvals.events.globex.>")
            await secured.refused("acme", "approvals.events.globex.>")
            await acme.subscribe("_INBOX.>")
            await secured.refused("acme", '"_INBOX.>"')
            for attempt, subject in (
                (
                    js.add_consumer(
                        STREAM,
                        name="spy",
                        filter_subject="approvals.events.globex.>",
                        deliver_subject="_INBOX_acme.spy",
                    ),
                    "$JS.API.CONSUMER.CREATE.APPROVALS_EVENTS.spy.approvals.events.globex.>",
                ),
                (js.stream_info(STREAM), "$JS.API.STREAM.INFO.APPROVALS_EVENTS"),
                (js.delete_stream(STREAM), "$JS.API.STREAM.DELETE.APPROVALS_EVENTS"),
                (js.purge_stream(STREAM), "$JS.API.STREAM.PURGE.APPROVALS_EVENTS"),
            ):
                with pytest.raises((NatsTimeout, TimeoutError, nats.errors.Error)):
                    await asyncio.wait_for(attempt, 0.5)
                await secured.refused("acme", subject)
            # Nothing of globex's changed.
            assert commands.app is not None
            assert commands.app.get(theirs.id).status == "pending"
        finally:
            await acme.close()
            await admin.close()


@pytest.mark.parametrize(
    "user", ["commands", "projection", "spendcap", "delivery", "admin", "gateway"]
)
async def test_no_one_can_destroy_the_streams_and_only_the_doors_decide(
    secured: Secured, user: str
) -> None:
    async with CommandService(secured.settings("commands")):
        nc = await secured.connect(user)
        try:
            js = nc.jetstream()
            for attempt, subject in (
                (js.delete_stream(STREAM), "$JS.API.STREAM.DELETE.APPROVALS_EVENTS"),
                (js.purge_stream(STREAM), "$JS.API.STREAM.PURGE.APPROVALS_EVENTS"),
                (js.delete_msg(STREAM, 1), "$JS.API.STREAM.MSG.DELETE.APPROVALS_EVENTS"),
                (
                    js.delete_stream("APPROVALS_CHECKPOINTS"),
                    "$JS.API.STREAM.DELETE.APPROVALS_CHECKPOINTS",
                ),
            ):
                with pytest.raises((NatsTimeout, TimeoutError, nats.errors.Error)):
                    await asyncio.wait_for(attempt, 0.5)
                await secured.refused(user, subject)
            for decision in ("approvals.cmd.acme.approve", "approvals.cmd.acme.respond"):
                await nc.publish(decision, b"{}")
                await nc.flush()
                if user in ("admin", "gateway"):
                    assert not any(decision in e for e in secured.errors.get(user, []))
                else:
                    await secured.refused(user, decision)
            if user != "commands":  # only the relay publishes events
                await nc.publish("approvals.events.acme.forged.requested", b"{}")
                await secured.refused(user, "approvals.events.acme.forged.requested")
            if user not in ("commands", "admin"):  # the relay's lease is the relay's alone
                await nc.publish("$KV.approvals_leases.relay", b"forged")
                await secured.refused(user, "$KV.approvals_leases.relay")
        finally:
            await nc.close()
    admin = await secured.connect("admin")
    try:
        assert (await admin.jetstream().stream_info(STREAM)).config.name == STREAM
    finally:
        await admin.close()


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "approvals test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def test_over_tls_with_the_configured_ca_and_never_without(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    shutil.copy(AUTH, tmp_path / "auth.conf")
    (tmp_path / "server.conf").write_text(
        f'include "auth.conf"\ntls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n'
    )
    password = "p" + secrets.token_hex(16)
    unused = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    env = {
        **os.environ,
        "APPROVALS_GATEWAY_NKEY": nkeys.from_seed(unused).public_key.decode(),
        **{f"APPROVALS_{u.upper()}_PASSWORD": password for u in USERS},
    }
    with NatsServer(tmp_path / "js", config=tmp_path / "server.conf", env=env) as server:
        settings = Settings(
            nats_url=server.url.replace("nats://", "tls://"),
            nats_user="admin",
            nats_password=password,
            nats_tls_ca=ca,
        )
        nc = await nats.connect(settings.nats_url, **connect_options(settings))
        try:
            assert nc.is_connected
            assert nc._transport is not None
            info = await nc.jetstream().account_info()
            assert info.streams >= 0
        finally:
            await nc.close()
        untrusting = ssl.create_default_context()  # the system's CAs: not ours
        with pytest.raises((ssl.SSLError, OSError, nats.errors.Error)):
            await nats.connect(
                settings.nats_url,
                tls=untrusting,
                user="admin",
                password=password,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                connect_timeout=3,
            )
