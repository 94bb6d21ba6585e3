"""The client over HTTP, for callers who reach only the gateway's ``/v1`` API with an API key.

The same calls and the same flow as the NATS client (``gate``, ``require_approval``), and the
same replies: the gateway passes the service's JSON through, so one decoder reads both. The
key's member is who asks, redeems and reports: ``requested_by`` must name it, and the gateway
fills in the executor and the reporter itself.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from approvals.client.errors import ApprovalsError
from approvals.client.flow import DECIDED, WAIT_CHUNK_S, Caller
from approvals.client.tracing import trace_headers
from approvals.schemas import subjects
from approvals.schemas.codec import encoder, reply_decoder, reply_error
from approvals.schemas.commands import Action, Request
from approvals.schemas.digest import action_digest
from approvals.schemas.queries import ViewReply, WaitReply
from approvals.schemas.signatures import verify_receipt

if TYPE_CHECKING:
    from approvals.schemas.queries import ApprovalView
    from approvals.schemas.receipts import PublicKey, Receipt, ReceiptBody
    from approvals.schemas.replies import AnyReply

_view_decoder = msgspec.json.Decoder(ViewReply)
_wait_decoder = msgspec.json.Decoder(WaitReply)
JSON = {"content-type": "application/json"}


class ApprovalsHttpClient(Caller):
    """One workspace's approvals through the gateway (``{api_url}/v1/workspaces/{workspace}``),
    as the member of the API key (``approvals keys create``). Use it as an async context
    manager, or ``close()`` it."""

    def __init__(
        self, api_url: str, workspace: str, api_key: str, *, timeout_s: float = 10.0
    ) -> None:
        self.workspace = subjects.token(workspace, "workspace")
        self.timeout = timeout_s
        base = f"{api_url.rstrip('/')}/v1/workspaces/{self.workspace}/approvals"
        self.http = httpx.AsyncClient(
            base_url=base, timeout=timeout_s, headers={"Authorization": f"Bearer {api_key}"}
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> ApprovalsHttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _post(self, path: str, body: msgspec.Struct | dict[str, Any]) -> AnyReply:
        headers = {**JSON, **(trace_headers() or {})}
        response = await self.http.post(path, content=encoder.encode(body), headers=headers)
        reply = reply_decoder.decode(response.content)
        if not reply.ok:
            raise ApprovalsError.of(reply.error)
        return reply

    async def check(self, **request: Any) -> AnyReply:
        """The dry run: would this request need approval, and why? Nothing is stored."""
        return await self._post("/check", msgspec.convert(request, Request))

    async def request(self, **request: Any) -> AnyReply:
        """Ask before acting (the fields of a ``request`` command; ``requested_by`` is the
        key's member). ``outcome`` as over NATS: ``not_required``, ``approved`` or
        ``approval_required`` with ``approval.id`` and ``approval.web_url``."""
        return await self._post("", msgspec.convert(request, Request))

    async def get(self, approval_id: Any) -> ApprovalView:
        data = (await self.http.get(f"/{approval_id}")).content
        return _view_decoder.decode(_refused_or(data)).approval

    async def wait(self, approval_id: Any, timeout_s: float) -> ApprovalView:
        """The approval once decided, or as it stands when ``timeout_s`` seconds have passed
        (its status still ``pending``): come back later with the same id."""
        deadline = time.monotonic() + timeout_s
        while True:
            chunk = max(0.1, min(deadline - time.monotonic(), WAIT_CHUNK_S))
            response = await self.http.get(
                f"/{approval_id}/wait", params={"timeout_s": chunk}, timeout=chunk + self.timeout
            )
            approval = _wait_decoder.decode(_refused_or(response.content)).approval
            if approval.status in DECIDED or deadline - time.monotonic() <= 0:
                return approval

    async def redeem(
        self, approval_id: Any, *, action: Action | dict[str, Any], payload: Any, executor: str
    ) -> AnyReply:
        """The final check before running (``executor``: the key's member, whom the gateway
        names itself). The action and payload go along, so a ``digest_mismatch`` says which
        of them differs."""
        action = msgspec.convert(action, Action)
        body = {"digest": action_digest(action, payload), "action": action,
                "proposed_payload": payload}  # fmt: skip
        return await self._post(f"/{approval_id}/redeem", body)

    async def report(
        self,
        approval_id: Any,
        *,
        credits_used: float,
        outcome: str,
        by: str,
        summary: str = "",
        external_refs: tuple[str, ...] = (),
    ) -> AnyReply:
        """What the run did (``by``: the key's member, whom the gateway names itself)."""
        body = {"credits_used": credits_used, "outcome": outcome, "summary": summary,
                "external_refs": list(external_refs)}  # fmt: skip
        return await self._post(f"/{approval_id}/report", body)

    async def verify_receipt(
        self, receipt: Receipt | dict[str, Any] | bytes, keys: list[PublicKey]
    ) -> ReceiptBody:
        """The signed facts if the receipt is valid; raises ``ReceiptInvalid`` otherwise.
        Offline, with the service's public keys (``approvals keys`` prints them)."""
        return verify_receipt(receipt, keys)


def _refused_or(data: bytes) -> bytes:
    """``data`` if the reply is not a refusal; else raise its ApprovalsError."""
    if error := reply_error(data):
        raise ApprovalsError.of(error)
    return data
