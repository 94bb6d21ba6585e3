"""The Python client of Approvals (the ``approvals-client`` distribution): ask before acting,
wait, redeem exactly what was approved, report; over NATS (``ApprovalsClient``) or over the
gateway's HTTP API with an API key (``ApprovalsHttpClient``).

    async with await ApprovalsClient.connect(url, "acme") as client:
        async with client.gate(requested_by=..., skill_name=..., skill_execution_id=...,
                               title=..., action=..., payload=...) as run:
            run.credits_used = do_it()
"""

from __future__ import annotations

from approvals.client.bus import CLIENT_VIA, ApprovalsClient, connect_once
from approvals.client.errors import (
    ApprovalDenied,
    ApprovalPending,
    ApprovalResponded,
    ApprovalsError,
)
from approvals.client.flow import Caller, Run, require_approval
from approvals.client.http import ApprovalsHttpClient
from approvals.schemas.signatures import ReceiptInvalid, verify_receipt

__all__ = [
    "CLIENT_VIA",
    "ApprovalDenied",
    "ApprovalPending",
    "ApprovalResponded",
    "ApprovalsClient",
    "ApprovalsError",
    "ApprovalsHttpClient",
    "Caller",
    "ReceiptInvalid",
    "Run",
    "connect_once",
    "require_approval",
    "verify_receipt",
]
