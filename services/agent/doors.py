"""How the MCP server reaches the service: the bus with NATS credentials, or the gateway's HTTP
API with an API key. Both answer with the service's own JSON replies (``ok``, or ``error`` with
its stable code), so the tools above them are one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import httpx
import msgspec

from approvals.client.tracing import trace_headers
from approvals.schemas import subjects
from approvals.schemas.codec import encoder
from approvals.schemas.commands import Via

if TYPE_CHECKING:
    from approvals.client import ApprovalsClient

MCP_VIA = Via(channel="mcp", auth="nats")  # the bus connection's credentials vouch for it


class Door(Protocol):
    """The commands and queries an agent may use; nothing that decides."""

    async def command(self, verb: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def get(self, approval_id: str) -> dict[str, Any]: ...
    async def wait(self, approval_id: str, timeout_s: float) -> dict[str, Any]: ...
    async def list(self, query: dict[str, Any]) -> dict[str, Any]: ...
    async def close(self) -> None: ...


AGENT_VERBS = frozenset({"check", "request", "redeem", "report"})


class BusDoor:
    """NATS with this process's credentials (APPROVALS_NATS_*)."""

    def __init__(self, client: ApprovalsClient) -> None:
        self.client = client

    async def command(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        assert verb in AGENT_VERBS, verb
        payload = encoder.encode({**body, "via": MCP_VIA})
        subject = subjects.command(self.client.workspace, verb)  # type: ignore[arg-type]
        # The MCP tool call's span (the SDK continues the caller's ``_meta.traceparent``) goes
        # along, so the command service continues the agent's trace.
        msg = await self.client.nc.request(subject, payload, self.client.timeout,
                                           headers=trace_headers())  # fmt: skip
        return _json(msg.data)

    async def get(self, approval_id: str) -> dict[str, Any]:
        return _json(await self.client.query("get", {"approval_id": approval_id}))

    async def wait(self, approval_id: str, timeout_s: float) -> dict[str, Any]:
        return _json(await self.client._wait_once(approval_id, timeout_s))

    async def list(self, query: dict[str, Any]) -> dict[str, Any]:
        return _json(await self.client.query("list", query))

    async def close(self) -> None:
        await self.client.close()


class ApiDoor:
    """The gateway's HTTP API with an API key: the key's member is who asks."""

    def __init__(self, api_url: str, workspace: str, api_key: str, timeout_s: float = 10.0):
        base = f"{api_url.rstrip('/')}/v1/workspaces/{workspace}/approvals"
        self.http = httpx.AsyncClient(
            base_url=base, timeout=timeout_s, headers={"Authorization": f"Bearer {api_key}"}
        )

    async def command(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        assert verb in AGENT_VERBS, verb
        if verb == "request":
            return _json((await self.http.post("", json=body)).content)
        if verb == "check":
            return _json((await self.http.post("/check", json=body)).content)
        # The gateway names the key's member as the executor or reporter itself.
        fields = {k: v for k, v in body.items() if k not in ("approval_id", "executor", "by")}
        approval_id = body["approval_id"]
        return _json((await self.http.post(f"/{approval_id}/{verb}", json=fields)).content)

    async def get(self, approval_id: str) -> dict[str, Any]:
        return _json((await self.http.get(f"/{approval_id}")).content)

    async def wait(self, approval_id: str, timeout_s: float) -> dict[str, Any]:
        response = await self.http.get(
            f"/{approval_id}/wait", params={"timeout_s": timeout_s}, timeout=timeout_s + 10
        )
        return _json(response.content)

    async def list(self, query: dict[str, Any]) -> dict[str, Any]:
        return _json((await self.http.get("", params=query)).content)

    async def close(self) -> None:
        await self.http.aclose()


def _json(data: bytes) -> dict[str, Any]:
    answer = msgspec.json.decode(data)
    if not isinstance(answer, dict):
        return {"ok": False, "error": {"code": "internal", "message": "unexpected reply"}}
    return answer
