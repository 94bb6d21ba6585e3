"""`approvals bus setup`: every stream and bucket, once, and the services bind them as they are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import nats

from approvals.services.runtime import bus

if TYPE_CHECKING:
    from approvals.services.runtime.natsserver import NatsServer

APPROVALS = str(Path(sys.executable).parent / "approvals")


def setup(server: NatsServer) -> list[dict[str, str]]:
    done = subprocess.run([APPROVALS, "--nats-url", server.url, "--json", "bus", "setup"],
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    streams: list[dict[str, str]] = json.loads(done.stdout)["streams"]
    return streams


async def test_bus_setup_creates_every_stream_and_bucket_once(nats_server: NatsServer) -> None:
    first = setup(nats_server)
    names = {"APPROVALS_EVENTS", "APPROVALS_CHECKPOINTS", *(f"KV_{b}" for b in bus.KV_BUCKETS)}
    assert {s["name"] for s in first} == names
    assert {s["done"] for s in first} == {"created with 1 replicas"}
    assert {s["done"] for s in setup(nats_server)} == {"kept (1 replicas)"}
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        leases = await bus.ensure_kv(js, "approvals_leases")  # bound, not created again
        assert (await leases.status()).ttl == bus.KV_BUCKETS["approvals_leases"][0]
        revision = await leases.create("relay", b"me")
        assert (await leases.get("relay")).revision == revision
    finally:
        await nc.close()
