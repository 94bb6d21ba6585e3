"""The workspace the tests work in: every actor the tests use, with the roles they need."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from approvals.schemas import commands
from approvals.schemas.workspace import Member, WorkspaceSettings
from approvals.services.approvals.governance import Workspace, workspace_key

if TYPE_CHECKING:
    from nats.aio.client import Client

    from approvals.services.approvals.application import Approvals

PEOPLE = (
    *("ana", "bo", "bob", "carol", "cy", "dave", "a", "a.b+c@x.io", "eve"),
    *(f"u{i}" for i in range(20)),  # a crowd of approvers for the races
)
SERVICES = ("enricher", "bot", "x", "bench", "billing", "approver-bot")
ADMIN = "user:root"

SETTINGS = WorkspaceSettings(
    members={
        ADMIN: Member(roles=("admin",)),
        **{f"user:{p}": Member(roles=("requester", "approver")) for p in PEOPLE},
        # Services may ask, and veto; only people approve, whatever their roles say.
        **{f"service:{s}": Member(roles=("requester", "approver")) for s in SERVICES},
    }
)
WORKSPACES = ("acme", "globex", "other", "default")


def workspace(workspace_id: str = "acme", settings: WorkspaceSettings = SETTINGS) -> Workspace:
    """The workspace's state as the command service holds it, for the pure domain's tests."""
    return Workspace(
        id=workspace_key(workspace_id),
        workspace_id=workspace_id,
        version=1,
        settings=settings,
        configured_by=ADMIN,
        configured_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


def configure(app: Approvals, *workspaces: str, settings: WorkspaceSettings = SETTINGS) -> None:
    """Set up each workspace that has no settings yet (the tests' shared workspaces)."""
    for workspace in workspaces or WORKSPACES:
        if app.workspace(workspace) is None:
            app.handle(workspace, commands.Configure(settings=settings, by=ADMIN))


async def configure_over_nats(nc: Client, *workspaces: str) -> None:
    from approvals.schemas.codec import encoder

    for workspace in workspaces or WORKSPACES:
        body = encoder.encode(commands.Configure(settings=SETTINGS, by=ADMIN))
        reply = json.loads((await nc.request(f"approvals.cmd.{workspace}.configure", body)).data)
        assert reply["ok"], reply


def approval_notifications(app: Approvals) -> list[Any]:
    """Every stored notification of an approval: the workspaces' settings left out."""
    return [n for n in app.notifications(1, 1_000_000) if n.topic not in WORKSPACE_TOPICS]


WORKSPACE_TOPICS = frozenset(
    f"schemas.events:{name}" for name in ("WorkspaceConfigured", "Delegated", "StandingUsed")
)
