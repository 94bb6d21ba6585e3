"""The Temporal resume service: a durable consumer of the endings on ``approvals.events``
(``approved``, ``rejected``, ``responded``, ``expired``, ``cancelled``) that signals the workflow
which asked (``approval()`` in approvals.client.integrations.temporal) how its approval ended.

A request asked from a workflow names it in its ``skill_execution_id``,
``temporal:<namespace>:<workflow id>``; the service signals the workflows of its own namespace
(one durable consumer per namespace, ``temporal-resumer-<namespace>``) and leaves the others.

Once per outcome, through a crash at any point: the event is acknowledged only after Temporal
took the signal, so a crash before the ack signals again; the signal's request id is made of the
approval id and the outcome, and the Temporal server drops a signal whose request id the
workflow run has seen, and the workflow keeps the first outcome of each approval anyway. A
signal waits in the workflow's history while no worker runs: a worker restarted later reads it.
A workflow that has ended (or never existed) is not signalled, and the event is done.

temporalio is an optional dependency (the client's ``temporal`` extra): only this module needs it.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import TYPE_CHECKING

import msgspec
import temporalio.api.common.v1
import temporalio.api.workflowservice.v1
from nats.errors import Error as NatsError
from temporalio.client import Client as TemporalClient
from temporalio.service import RPCError, RPCStatusCode

from approvals.client.integrations.temporal import SIGNAL, Decision, workflow_of
from approvals.schemas import events, subjects
from approvals.schemas.codec import encoder, reply_error
from approvals.schemas.queries import ViewReply
from approvals.services.runtime.consumer import ConsumerService, EventConsumers, Unavailable

if TYPE_CHECKING:
    from nats.aio.client import Client

    from approvals.schemas.queries import ApprovalView
    from approvals.services.runtime.settings import Settings

log = logging.getLogger(__name__)

ENDINGS = ("approved", "rejected", "expired", "cancelled", "responded")
IDENTITY = "approvals-temporal-resumer"
_view_decoder = msgspec.json.Decoder(ViewReply)


def request_id(approval_id: str, status: str) -> str:
    """The signal's request id: the same for the same outcome, whoever sends it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"approvals:{approval_id}:{status}"))


class Resumer:
    """Signals the workflows of ``temporal.namespace`` as their approvals end."""

    def __init__(self, nc: Client, settings: Settings, temporal: TemporalClient) -> None:
        self.nc = nc
        self.temporal = temporal
        # A durable's name is one subject token; a namespace may hold dots (Temporal Cloud's).
        self.durable = "temporal-resumer-" + re.sub(r"[^A-Za-z0-9_-]", "_", temporal.namespace)
        self.consumers = EventConsumers(nc, ack_wait_s=settings.ack_wait_s)

    async def start(self) -> None:
        await self.consumers.consume(self.durable, ENDINGS, self.resume, max_ack_pending=1000)

    async def stop(self) -> None:
        await self.consumers.stop()

    async def resume(self, event: events.AnyEvent) -> float | None:
        if not isinstance(event, events.Approved | events.Rejected | events.Expired
                          | events.Cancelled | events.Responded):  # fmt: skip
            return None
        view = await self._view(event)
        asker = workflow_of(view.skill_execution_id)
        if asker is None or asker[0] != self.temporal.namespace:
            return None  # not asked from a workflow of this namespace
        if view.status == "pending":
            raise Unavailable(f"the status view shows {view.id} pending after its ending")
        await self._signal(asker[1], Decision.of(view))
        return None

    async def _view(self, event: events.Event) -> ApprovalView:
        """The approval as the status view shows it, at least at ``event`` (else: later)."""
        body = {"approval_id": str(event.approval_id), "min_version": event.version}
        try:
            msg = await self.nc.request(subjects.query(event.workspace_id, "get"),
                                        encoder.encode(body), timeout=10.0)  # fmt: skip
        except (NatsError, TimeoutError) as error:
            raise Unavailable(f"get {event.approval_id} not answered ({error!r})") from None
        if refused := reply_error(msg.data):
            raise Unavailable(f"{event.approval_id}: {refused.code}: {refused.message}")
        reply = _view_decoder.decode(msg.data)
        if not reply.caught_up:
            raise Unavailable(f"the status view has not reached {event.approval_id} yet")
        return reply.approval

    async def _signal(self, workflow_id: str, decision: Decision) -> None:
        assert decision.approval_id is not None, "an approval's decision names it"
        request = temporalio.api.workflowservice.v1.SignalWorkflowExecutionRequest(
            namespace=self.temporal.namespace,
            workflow_execution=temporalio.api.common.v1.WorkflowExecution(workflow_id=workflow_id),
            signal_name=SIGNAL, identity=IDENTITY,
            request_id=request_id(decision.approval_id, decision.status),
        )  # fmt: skip
        request.input.payloads.extend(await self.temporal.data_converter.encode([decision]))
        try:
            await self.temporal.workflow_service.signal_workflow_execution(request, retry=True)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:  # ended, or never there: nobody waits
                log.info("workflow %s is not running; %s not signalled", workflow_id,
                         decision.approval_id)  # fmt: skip
                return
            raise Unavailable(f"signal to {workflow_id}: {error.status.name}: {error}") from None
        log.info("signalled %s: %s %s", workflow_id, decision.approval_id, decision.status)


class ResumerService(ConsumerService):
    """The resume service on its own bus connection, with a Temporal client."""

    name = "temporal-resumer"

    def __init__(self, settings: Settings, *, address: str, namespace: str) -> None:
        super().__init__(settings)
        self.address = address
        self.namespace = namespace
        self.temporal: TemporalClient | None = None

    async def start(self) -> None:
        self.temporal = await TemporalClient.connect(self.address, namespace=self.namespace,
                                                     identity=IDENTITY)  # fmt: skip
        await super().start()

    def build(self, nc: Client) -> Resumer:
        assert self.temporal is not None, "start() connects to Temporal first"
        return Resumer(nc, self.settings, self.temporal)
