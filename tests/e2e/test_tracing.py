"""One approval, one trace, across processes: each service runs as its own ``approvals serve
--only ...`` process exporting its spans over OTLP/HTTP to a receiver in the test (tests/e2e/
otlp.py). The caller's ``traceparent`` is continued by the HTTP API and by the Python client;
the webhook's HTTP call carries the trace to its receiver; the person's decision in the web
inbox (an HTTP POST to the inbox's decision route, as its form sends it) joins the approval's
trace although the browser sent no trace context."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from approvals.client.bus import ApprovalsClient
from approvals.client.http import ApprovalsHttpClient
from approvals.services.runtime import tracing
from tests.e2e.devserver import APPROVALS, free_port
from tests.e2e.otlp import Receiver, Span
from tests.e2e.test_gateway import csrf_token
from tests.helpers import eventually
from tests.integration.test_delivery import SECRET, Hooks

if TYPE_CHECKING:
    from collections.abc import Iterator

    from approvals.services.runtime.natsserver import NatsServer

pytestmark = pytest.mark.slow

AGENT = "service:agent"
SERVICES = ("commands", "projection", "spendcap", "delivery", "gateway")
WORKSPACE = """
default_expiry_s = 3600
[members."user:admin"]
roles = ["admin"]
[members."user:ana"]
roles = ["approver"]
[members."service:agent"]
roles = ["requester"]
[channels]
medium = ["inbox", "hooks"]
[channel.hooks]
kind = "webhook"
secret = "TEST_HOOK_SECRET"
target = "{target}"
"""


class Stack:
    """The five services, each its own process, and what they export."""

    def __init__(self, nats_url: str, root: Path, receiver: Receiver) -> None:
        self.nats_url, self.root, self.port = nats_url, root, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ, "NATS_URL": nats_url, "APPROVALS_STORE": "sqlite",
            "APPROVALS_SQLITE_PATH": str(root / "approvals.db"),
            "APPROVALS_VIEW_SQLITE_PATH": str(root / "status.db"),
            "APPROVALS_GATEWAY_PORT": str(self.port), "APPROVALS_WEB_URL": self.base,
            "APPROVALS_GATEWAY_SECRET": secrets.token_hex(32), "APPROVALS_DEV_SIGN_IN": "true",
            "APPROVALS_WEBHOOK_ALLOW": "127.0.0.1/32", "TEST_HOOK_SECRET": SECRET,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "300",
        }  # fmt: skip
        self.processes: list[subprocess.Popen[str]] = []

    def start(self) -> None:
        for only in SERVICES:
            env = {**self.env, "OTEL_SERVICE_NAME": f"approvals-{only}"}
            with (self.root / f"{only}.log").open("w") as log:
                process = subprocess.Popen(
                    [APPROVALS, "serve", "--only", only], env=env, stdout=subprocess.PIPE,
                    stderr=log, text=True, start_new_session=True,
                )  # fmt: skip
            self.processes.append(process)
            assert process.stdout is not None
            for line in process.stdout:  # its own readiness line, then on to the next
                if line.startswith("ready"):
                    break
            else:
                pytest.fail(f"{only} exited: {(self.root / f'{only}.log').read_text()[-3000:]}")

    def cli(self, *args: str) -> None:
        done = subprocess.run([APPROVALS, "--nats-url", self.nats_url, "-w", "default", *args],
                              capture_output=True, text=True, timeout=60, env=self.env)  # fmt: skip
        assert done.returncode == 0, (done.stdout, done.stderr)

    def key(self, actor: str) -> str:
        done = subprocess.run(
            [APPROVALS, "--nats-url", self.nats_url, "-w", "default", "--json", "keys", "create",
             "--as", actor, "--by", "user:admin"],
            capture_output=True, text=True, timeout=60, env=self.env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return str(httpx.Response(200, content=done.stdout).json()["key"])

    def stop(self) -> None:
        for process in reversed(self.processes):  # SIGTERM: each exports what it holds
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.stop()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    found = Hooks()
    yield found
    found.server.shutdown()


@pytest.fixture
def stack(
    nats_server: NatsServer, tmp_path: Path, receiver: Receiver, hooks: Hooks
) -> Iterator[Stack]:
    found = Stack(nats_server.url, tmp_path, receiver)
    try:
        found.start()
        workspace = tmp_path / "workspace.toml"
        workspace.write_text(WORKSPACE.format(target=f"{hooks.url}/hooks"))
        found.cli("workspace", "apply", str(workspace), "--as", "user:admin")
        yield found
    finally:
        found.stop()


def caller(trace_id: int) -> NonRecordingSpan:
    """The caller's own span (of an application whose spans we do not see)."""
    context = SpanContext(trace_id, secrets.randbits(64) | 1, is_remote=False,
                          trace_flags=TraceFlags(TraceFlags.SAMPLED))  # fmt: skip
    return NonRecordingSpan(context)


def one(spans: list[Span], name: str, service: str) -> Span:
    found = [s for s in spans if s.name == name and s.service == f"approvals-{service}"]
    assert len(found) == 1, (name, service, sorted({(s.name, s.service) for s in spans}))
    return found[0]


async def test_one_approval_is_one_trace_across_the_processes(
    stack: Stack, receiver: Receiver, hooks: Hooks
) -> None:
    agent = stack.key(AGENT)
    trace_int = secrets.randbits(128) | 1
    trace_hex = f"{trace_int:032x}"
    body = {"requested_by": AGENT, "skill_name": "crm-sync", "skill_execution_id": "traced",
            "title": "Sync 40 contacts", "summary": "to HubSpot", "risk_level": "medium",
            "action": {"kind": "crm_write", "mode": "live", "destination": "hubspot:list/42",
                       "max_credits": 10},
            "proposed_payload": {"contacts": 40}}  # fmt: skip
    # Check: the HTTP API continues the caller's traceparent; the request records its trace id.
    agent_span = caller(trace_int)
    caller_span = f"{agent_span.get_span_context().span_id:016x}"
    async with ApprovalsHttpClient(stack.base, "default", agent) as client:
        with trace.use_span(agent_span):
            asked = await client.request(**body)
    approval = asked.approval
    assert approval is not None
    assert approval.trace_id == trace_hex
    # Check: the webhook is called within the trace (its HTTP call carries the traceparent).
    await eventually(lambda: hooks.on("/hooks"), within_s=30)
    [(headers, _)] = hooks.on("/hooks")
    assert headers["traceparent"].split("-")[1] == trace_hex
    # Check: a person decides in the web inbox: a browser's POST, with no trace context.
    async with httpx.AsyncClient(base_url=stack.base, timeout=30) as browser:
        token = csrf_token((await browser.get("/sign-in")).text)
        await browser.post("/sign-in/dev", data={"member": "user:ana", "_csrf_token": token})
        page = f"/workspaces/default/approvals/{approval.id}"
        token = csrf_token((await browser.get(page)).text)
        decided = await browser.post(f"{page}/approve", data={"digest": approval.digest,
                                                              "_csrf_token": token})  # fmt: skip
    assert decided.status_code == 303, decided.text
    assert "traceparent" not in decided.request.headers
    # Check: the agent redeems and reports with the Python client, in the same trace.
    async with ApprovalsHttpClient(stack.base, "default", agent) as client:
        await eventually(lambda: _approved(client, approval.id))
        with trace.use_span(agent_span):
            await client.redeem(approval.id, action=body["action"],
                                payload=body["proposed_payload"], executor=AGENT)  # fmt: skip
            await client.report(approval.id, credits_used=4, outcome="succeeded", by=AGENT)
    spans = await _spans(receiver, trace_hex, caller_span)
    by_id = {s.span_id: s for s in spans}
    cmd = "process approvals.cmd.{workspace}."

    # Check: from the HTTP request to the command service and its commit.
    http_request = one(spans, "POST /v1/workspaces/{workspace}/approvals", "gateway")
    assert http_request.parent_id == caller_span
    request = one(spans, cmd + "request", "commands")
    assert request.parent_id == http_request.span_id
    assert request.span_id == f"{tracing.anchor(UUID(str(approval.id))):016x}"
    commit = next(s for s in spans if s.name == "commit" and s.parent_id == request.span_id)
    # Check: the relay publishes the requested event as a child of that commit.
    published = [s for s in spans if s.name == f"send {tracing.EVENT_TEMPLATE}"]
    requested = next(s for s in published if s.parent_id == commit.span_id)
    assert requested.attributes["messaging.system"] == "nats"
    assert requested.attributes["messaging.destination.name"].endswith(".requested")
    # Check: the spend check consumes it (another process) and its command continues the trace.
    spend_check = next(s for s in spans if s.service == "approvals-spendcap"
                       and s.parent_id == requested.span_id)  # fmt: skip
    assert spend_check.attributes["messaging.operation.type"] == "process"
    checked = one(spans, cmd + "check_spend", "commands")
    assert checked.parent_id == spend_check.span_id
    # Check: the delivery consumes spend_checked, and the webhook's HTTP call is its child.
    webhook = one(spans, "deliver webhook", "delivery")
    delivering = by_id[webhook.parent_id]
    assert delivering.service == "approvals-delivery"
    assert by_id[delivering.parent_id].name == f"send {tracing.EVENT_TEMPLATE}"
    http_call = next(s for s in spans if s.parent_id == webhook.span_id)
    assert headers["traceparent"].split("-")[2] == http_call.span_id
    # Check: the decision joins the approval's trace under its request, linked to the browser's.
    approve = one(spans, cmd + "approve", "commands")
    assert approve.parent_id == request.span_id
    [(browser_trace, _)] = approve.links
    assert browser_trace != trace_hex
    # Check: redeem and report continue the caller's trace through the HTTP API.
    for verb in ("redeem", "report"):
        done = one(spans, cmd + verb, "commands")
        assert by_id[done.parent_id].service == "approvals-gateway", verb
    # Check: the status projection applies the events within the trace.
    assert any(s.service == "approvals-projection" for s in spans)
    # Check: every span's parent is the caller's span or one received: no orphan in the trace.
    orphans = [(s.name, s.service) for s in spans
               if s.parent_id not in by_id and s.parent_id != caller_span]  # fmt: skip
    assert not orphans
    assert {s.service for s in spans} == {f"approvals-{x}" for x in SERVICES}

    # Check: the metrics go over OTLP too, the same numbers as /metrics (the decision's time).
    def decided() -> list[Any]:
        points = receiver.points("approvals-commands", "approvals_decision_seconds")
        wanted = {"workspace": "default", "risk": "medium", "outcome": "approved"}
        return [p for labels, p in points if labels == wanted and p.count == 1]

    await eventually(decided, within_s=30)
    [point] = decided()
    assert sum(point.bucket_counts) == 1
    assert len(point.bucket_counts) == len(point.explicit_bounds) + 1


async def test_nats_callers_continue_their_trace_and_a_trace_id_names_one(
    stack: Stack, receiver: Receiver
) -> None:
    body = {"requested_by": AGENT, "skill_name": "crm-sync", "title": "Sync", "summary": "s",
            "risk_level": "medium", "action": {"kind": "crm_write", "mode": "live",
                                               "destination": "hubspot:list/42"}}  # fmt: skip
    agent_span = caller(secrets.randbits(128) | 1)
    context = agent_span.get_span_context()
    trace_hex, caller_span = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    client = await ApprovalsClient.connect(stack.nats_url, "default", 10)
    try:
        with trace.use_span(agent_span):
            # Check: the Python client over NATS sends the caller's traceparent, continued.
            plain = await client.request(**body, skill_execution_id="nats")
            # Check: a trace_id that is not a W3C trace id names its own trace (hashed), which
            # links to the caller's span.
            named = await client.request(**body, skill_execution_id="named", trace_id="run-42")
    finally:
        await client.close()
    assert plain.approval is not None
    assert plain.approval.trace_id == trace_hex
    assert named.approval is not None
    assert named.approval.trace_id == "run-42"
    request = "process approvals.cmd.{workspace}.request"
    await eventually(lambda: _named(receiver, trace_hex, request), within_s=30)
    [continued] = _named(receiver, trace_hex, request)
    assert continued.parent_id == caller_span
    run_trace = f"{tracing.trace_of('run-42'):032x}"
    await eventually(lambda: _named(receiver, run_trace, request), within_s=30)
    [started] = _named(receiver, run_trace, request)
    assert started.parent_id == ""  # the root of the approval's trace
    assert started.links == ((trace_hex, caller_span),)
    assert started.span_id == f"{tracing.anchor(UUID(str(named.approval.id))):016x}"


async def test_an_agents_mcp_tool_call_continues_its_trace(
    stack: Stack, receiver: Receiver
) -> None:
    env = {**stack.env, "APPROVALS_WORKSPACE": "default", "APPROVALS_MCP_AS": AGENT,
           "OTEL_SERVICE_NAME": "approvals-mcp"}  # fmt: skip
    server = StdioServerParameters(command=APPROVALS, args=["mcp"], env=env)
    agent_span = caller(secrets.randbits(128) | 1)
    context = agent_span.get_span_context()
    trace_hex, caller_span = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    async with Client(server) as mcp:
        # Check: the MCP SDK's client sends the agent's trace in _meta; the tool call goes on.
        with trace.use_span(agent_span):
            asked = await mcp.call_tool("request_approval", {
                "skill_name": "crm-sync", "skill_execution_id": "mcp", "title": "Sync",
                "summary": "s", "risk_level": "medium",
                "action": {"kind": "crm_write", "mode": "live", "destination": "hubspot:list/42"},
            })  # fmt: skip
    assert not asked.is_error, asked.content
    request = "process approvals.cmd.{workspace}.request"
    await eventually(lambda: _named(receiver, trace_hex, request), within_s=30)
    tool = "tools/call request_approval"
    await eventually(lambda: _named(receiver, trace_hex, tool), within_s=30)
    [tool_call] = _named(receiver, trace_hex, tool)
    [command] = _named(receiver, trace_hex, request)
    # Check: the MCP server's span is the agent's child, the command service's is the tool's.
    assert (tool_call.service, tool_call.parent_id) == ("approvals-mcp", caller_span)
    assert command.parent_id == tool_call.span_id


def _named(receiver: Receiver, trace_hex: str, name: str) -> list[Span]:
    return [s for s in receiver.in_trace(trace_hex) if s.name == name]


async def _approved(client: ApprovalsHttpClient, approval_id: Any) -> bool:
    return (await client.get(approval_id)).status == "approved"


async def _spans(receiver: Receiver, trace_hex: str, caller_span: str) -> list[Span]:
    """The trace once the report's spans have come in (every process exports on its own): the
    caller's three requests' spans, and every other span's parent, received."""

    def complete() -> bool:
        spans = receiver.in_trace(trace_hex)
        ids = {s.span_id for s in spans}
        missing = [s for s in spans if s.parent_id not in ids and s.parent_id != caller_span]
        from_caller = [s for s in spans if s.parent_id == caller_span]
        reported = [s for s in spans if s.name == "process approvals.cmd.{workspace}.report"]
        return bool(reported) and not missing and len(from_caller) == 3

    await eventually(complete, within_s=30)
    return receiver.in_trace(trace_hex)
