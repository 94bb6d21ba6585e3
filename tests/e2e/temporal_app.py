"""The workflow the Temporal tests drive, and its worker: the workflow asks before sending rows
(``approval()``), waits for the resume service's signal, then runs the ``send`` activity, which
redeems the approved version and writes one line per send to a file (the side effect that must
happen at most once). Run as a module it is the worker, printing ``ready`` once it polls:

    python -m tests.e2e.temporal_app NATS_URL TEMPORAL_ADDRESS TASK_QUEUE EFFECTS
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from approvals.client import ApprovalsClient
    from approvals.client.integrations.temporal import ApprovalActivities, Decision, approval

AGENT = "service:agent"
LIVE = {"kind": "provider_call", "mode": "live", "provider": "clearbit", "max_credits": 40}


@workflow.defn(name="SendRows")
class SendRows:
    @workflow.run
    async def run(
        self, rows: list[int], expires_in_s: int | None, action: dict[str, Any] | None
    ) -> str:
        decision = await approval(
            action=action or LIVE, payload={"rows": rows}, requested_by=AGENT,
            title="Send the rows", skill_name="temporal-test", expires_in_s=expires_in_s,
        )  # fmt: skip
        if not decision.approved:
            return f"{decision.status}: {decision.reason} rerun={decision.rerun}"
        return str(await workflow.execute_activity(
            "send", decision, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=1)),
        ))  # fmt: skip


class Sender:
    def __init__(self, approvals: ApprovalActivities, effects: Path) -> None:
        self.approvals = approvals
        self.effects = effects

    @activity.defn(name="send")
    async def send(self, decision: Decision) -> str:
        await self.approvals.redeem(decision, executor=AGENT)  # once: a retry is refused
        with self.effects.open("a") as out:
            out.write(json.dumps(decision.payload) + "\n")
        return f"sent {decision.payload['rows']}"


async def main(nats_url: str, address: str, task_queue: str, effects: Path) -> None:
    client = await ApprovalsClient.connect(nats_url, "default", reply_timeout=10.0)
    approvals = ApprovalActivities(client)
    temporal = await Client.connect(address)
    worker = Worker(temporal, task_queue=task_queue, workflows=[SendRows],
                    activities=[*approvals.all(), Sender(approvals, effects).send])  # fmt: skip
    async with worker:
        print("ready", flush=True)
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])))
