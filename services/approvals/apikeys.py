"""API keys: a workspace's admins create them for its members; the gateway checks them.

Pure, like the domain. Each key is its own aggregate (uuid5 of workspace and key id). The
secret never reaches the service: the creator sends its SHA-256 (a random 256-bit secret needs
no slow hash), and the gateway compares the SHA-256 of what a caller presents.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid4, uuid5

import msgspec

from approvals.schemas import commands, events
from approvals.services.approvals.errors import Conflict, Forbidden, NotFound
from approvals.services.approvals.governance import Workspace, require_role

API_KEY_NAMESPACE = UUID("9a4c1e07-2d3b-4f68-8e15-7b6a0c9d2f34")


def api_key_key(workspace_id: str, key_id: str) -> UUID:
    return uuid5(API_KEY_NAMESPACE, f"api-key\x00{workspace_id}\x00{key_id}")


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    version: int
    workspace_id: str
    key_id: str
    acts_as: str
    name: str
    secret_sha256: str
    created_by: str
    created_at: datetime
    revoked: bool = False


def create(
    ws: Workspace, existing: ApiKey | None, cmd: commands.CreateApiKey, now: datetime
) -> events.ApiKeyCreated:
    admin = require_role(ws, cmd.by, "admin", "create API keys")
    if ws.member_of(cmd.actor) is None:
        raise Forbidden(f"{cmd.actor} is not a member of the workspace: a key acts as a member",
                        rule="api_key_actor_is_member", actor=cmd.actor)  # fmt: skip
    if existing is not None:
        raise Conflict("an API key with this id exists already", key_id=cmd.key_id)
    return events.ApiKeyCreated(
        event_id=uuid4(), aggregate_id=api_key_key(ws.workspace_id, cmd.key_id), version=1,
        workspace_id=ws.workspace_id, occurred_at=now, actor=admin, key_id=cmd.key_id,
        secret_sha256=cmd.secret_sha256, acts_as=cmd.actor, name=cmd.name,
    )  # fmt: skip


def revoke(
    ws: Workspace, existing: ApiKey | None, cmd: commands.RevokeApiKey, now: datetime
) -> events.ApiKeyRevoked:
    admin = require_role(ws, cmd.by, "admin", "revoke API keys")
    if existing is None:
        raise NotFound("no such API key", key_id=cmd.key_id, kind="api_key")
    if existing.revoked:
        raise Conflict("the API key is revoked already", key_id=cmd.key_id)
    return events.ApiKeyRevoked(
        event_id=uuid4(), aggregate_id=existing.id, version=existing.version + 1,
        workspace_id=ws.workspace_id, occurred_at=now, actor=admin, key_id=cmd.key_id,
    )  # fmt: skip


def evolve(key: ApiKey | None, event: events.ApiKeyCreated | events.ApiKeyRevoked) -> ApiKey:
    if isinstance(event, events.ApiKeyCreated):
        return ApiKey(
            id=event.aggregate_id, version=event.version, workspace_id=event.workspace_id,
            key_id=event.key_id, acts_as=event.acts_as, name=event.name,
            secret_sha256=event.secret_sha256, created_by=event.actor,
            created_at=event.occurred_at,
        )  # fmt: skip
    if key is None:
        raise TypeError(f"api_key_revoked before api_key_created for {event.key_id}")
    return msgspec.structs.replace(key, version=event.version, revoked=True)
