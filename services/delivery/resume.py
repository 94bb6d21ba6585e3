"""Resume by webhook: a request's ``resume_url`` (a workflow engine's callback: n8n's Wait
node, a Windmill resume URL, a GitHub deployment protection rule) is POSTed the outcome once per
outcome, the body and signature of the webhook channel's outcome POST (Standard Webhooks, the
workspace's ``[resume] secret``), under the same SSRF rules, with the same retries.

Once: the record ``<approval id>.resume.<outcome>`` in the deliveries bucket is written after
the POST, so a redelivered ending finds it; a crash between the POST and the record sends it
again with the same ``webhook-id`` (the record's key), by which the receiver drops the repeat.
A destination that never takes it (refused as not public, a 4xx) is recorded with the error."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from approvals.schemas.codec import encoder
from approvals.schemas.workspace import ChannelConfig
from approvals.services.delivery.adapters import DeliveryError
from approvals.services.runtime.ops import DELIVERIES

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from approvals.schemas.workspace import WorkspaceSettings
    from approvals.services.delivery.adapters import Adapter
    from approvals.services.delivery.notice import Outcome

log = logging.getLogger(__name__)

CHANNEL = "resume"  # the pseudo-channel its records are kept under


async def resume(
    records: KeyValue,
    webhook: Adapter,
    settings: WorkspaceSettings,
    outcome: Outcome,
    url: str,
    *,
    attempts: int,
    recorded: bytes | None,
) -> None:
    """POST ``outcome`` to ``url`` unless ``recorded`` (what the bucket holds under its key)
    says it was sent, then record how it went."""
    if recorded is not None:
        return  # sent (or given up) already
    key = f"{outcome.approval_id}.{CHANNEL}.{outcome.status}"
    # The request was refused without a [resume] secret; one removed since is an error below.
    secret = settings.resume.secret if settings.resume is not None else None
    config = ChannelConfig(kind="webhook", secret=secret, target=url)
    error: DeliveryError | None = None
    for attempt in range(1, max(1, attempts) + 1):
        try:
            await webhook.tell_outcome(outcome, config, None, key)
        except DeliveryError as failed:
            error = failed
            log.warning("%s: resume_url, attempt %d of %d: %s", outcome.approval_id, attempt,
                        attempts, failed)  # fmt: skip
            if failed.permanent or attempt >= attempts:
                break
            DELIVERIES.labels(CHANNEL, "retried").inc()
            await asyncio.sleep(0.5 * 2 ** (attempt - 1))  # the retry schedule's pause
            continue
        DELIVERIES.labels(CHANNEL, "delivered").inc()
        await records.put(key, encoder.encode({"target": url[:200], "attempts": attempt}))
        return
    DELIVERIES.labels(CHANNEL, "failed").inc()
    await records.put(key, encoder.encode({"target": url[:200], "error": str(error)[:4000],
                                           "attempts": attempt}))  # fmt: skip
