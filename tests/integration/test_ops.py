"""`approvals serve`'s ops endpoints, on the process an operator runs: liveness, readiness that
follows the bus, and Prometheus metrics that count what happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from approvals.services.runtime.natsserver import NatsServer, free_port
from tests.helpers import eventually
from tests.integration.test_commands import REQUEST, approve_body
from tests.workspaces import configure_over_nats

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow


class Served:
    """``approvals serve`` (every service: commands, projection, spend caps, delivery, gateway)
    as a process."""

    def __init__(self, tmp_path: Path, nats_server: NatsServer) -> None:
        self.ops = f"http://127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "NATS_URL": nats_server.url,
            "APPROVALS_SQLITE_PATH": str(tmp_path / "approvals.db"),
            "APPROVALS_VIEW_SQLITE_PATH": str(tmp_path / "status.db"),
            "APPROVALS_OPS_PORT": self.ops.rsplit(":", 1)[1],
            "APPROVALS_GATEWAY_PORT": str(free_port()),
        }
        self.log = tmp_path / "serve.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "approvals"), "serve"],
                env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def get(self, path: str) -> httpx.Response:
        if self.process.poll() is not None:
            pytest.fail(f"approvals serve exited:\n{self.log.read_text()[-3000:]}")
        return httpx.get(self.ops + path, timeout=10)

    def answers(self, path: str, status: int) -> bool:
        try:
            return self.get(path).status_code == status
        except httpx.TransportError:
            return False  # not listening yet

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(self.get("/metrics").text)
            for sample in family.samples
        }


@pytest.fixture
def served(tmp_path: Path, nats_server: NatsServer) -> Iterator[Served]:
    process = Served(tmp_path, nats_server)
    yield process
    process.process.terminate()
    try:
        process.process.wait(20)
    except subprocess.TimeoutExpired:
        process.process.kill()
        process.process.wait()


def sample(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


async def test_ready_once_started_counting_commands_and_lags(
    served: Served, nats_server: NatsServer
) -> None:
    await eventually(lambda: served.answers("/readyz", 200), within_s=60)
    ready = served.get("/readyz").json()
    # Check: every service of the process reports ready by name.
    assert ready == {"ready": True, "started": True, "services": {
        "commands": True, "projection": True, "spendcap": True, "delivery": True,
        "gateway": True}}  # fmt: skip
    assert served.get("/healthz").text == "ok"

    nc = await nats.connect(nats_server.url)
    try:
        await configure_over_nats(nc, "acme")
        asked = json.dumps(REQUEST).encode()
        reply = json.loads((await nc.request("approvals.cmd.acme.request", asked, 10)).data)
        assert reply["outcome"] == "approval_required", reply
        body = json.dumps(approve_body(reply["approval"])).encode()
        approved = json.loads((await nc.request("approvals.cmd.acme.approve", body, 10)).data)
        assert approved["outcome"] == "approved", approved
        bad = json.loads((await nc.request("approvals.cmd.acme.request", b"{nope", 10)).data)
        assert bad["error"]["code"] == "invalid"
    finally:
        await nc.close()

    metrics = served.metrics()
    # Check: the requests, decisions and refusals are counted by verb and outcome, and timed.
    assert sample(metrics, "approvals_commands_total", verb="request",
                  outcome="approval_required") == 1  # fmt: skip
    assert sample(metrics, "approvals_commands_total", verb="approve", outcome="approved") == 1
    assert sample(metrics, "approvals_commands_total", verb="request", outcome="invalid") == 1
    assert sample(metrics, "approvals_command_seconds_count", verb="request") == 1
    assert sample(metrics, "approvals_command_seconds_count", verb="approve") == 1
    assert sample(metrics, "approvals_relay_lease_held") == 1
    assert sample(metrics, "approvals_ready", service="projection") == 1

    def caught_up() -> bool:
        lags = served.metrics()
        consumers = {
            dict(labels)["consumer"]: value
            for (name, labels), value in lags.items()
            if name == "approvals_consumer_lag_events"
        }
        # Check: the spend-cap service's and the projection's consumers are watched, and drain.
        return (
            {"spendcap", "spendcap-deadlines", "delivery", "status-projection"} <= set(consumers)
            and not any(consumers.values())
            and sample(lags, "approvals_projection_lag_events") == 0
            and sample(lags, "approvals_relay_lag_events") == 0
            and sample(lags, "approvals_consumer_events_total", consumer="spendcap", outcome="done")
            == 1
        )

    await eventually(caught_up, within_s=30)


async def test_not_ready_while_the_bus_is_down_and_ready_again_after(
    served: Served, nats_server: NatsServer
) -> None:
    await eventually(lambda: served.answers("/readyz", 200), within_s=60)
    nats_server.kill()
    # Check: the process is alive but not ready, and says which services are not.
    await eventually(lambda: served.answers("/readyz", 503), within_s=30)
    down = served.get("/readyz").json()
    assert down["ready"] is False
    assert down["services"]["commands"] is False
    assert served.get("/healthz").status_code == 200
    await eventually(lambda: sample(served.metrics(), "approvals_ready", service="commands") == 0)
    nats_server.start()
    await eventually(lambda: served.answers("/readyz", 200), within_s=60)
