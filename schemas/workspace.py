"""A workspace's settings: who may do what, quorum, channels, policy rules and budgets.

Written by people as a TOML file (``approvals workspace apply FILE``), validated into these
Structs, and stored as events of the workspace, so every change says who made it and when.
Channel secrets are only named here (an environment variable or a key of the secrets file):
their values never enter the file, the store or the bus.
"""

from __future__ import annotations

import tomllib
from typing import Annotated, Any, Literal

import msgspec

from approvals.schemas.types import END, ActionKind, Actor, Credits, RiskLevel

Role = Literal["requester", "approver", "admin"]
GroupName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,63}" + END)]
RuleName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,63}" + END)]
Channel = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}" + END)]
SecretName = Annotated[str, msgspec.Meta(pattern=r"^[A-Z][A-Z0-9_]{0,127}" + END)]
Quorum = Annotated[int, msgspec.Meta(ge=1, le=20)]
ExpirySeconds = Annotated[int, msgspec.Meta(ge=60, le=30 * 24 * 3600)]
RedeemSeconds = Annotated[int, msgspec.Meta(ge=1, le=30 * 24 * 3600)]


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of the workspace file's tables: an unknown key is a mistake, and refused."""


class Member(Settings, frozen=True, kw_only=True):
    roles: tuple[Role, ...]
    # Other names the same person signs with (another channel's identity): one person, one vote.
    aliases: tuple[Actor, ...] = ()


class StandingPermission(Settings, frozen=True, kw_only=True):
    """Bounded live work approved in advance, recorded as approved by ``policy:<name>``."""

    name: RuleName
    kinds: tuple[ActionKind, ...]
    providers: tuple[str, ...] = ()  # empty: any provider
    risk_levels: tuple[RiskLevel, ...] = ("low",)
    requested_by: tuple[Actor, ...] = ()  # empty: any requester of the workspace
    max_credits_per_run: Credits
    max_credits_per_day: Credits | None = None


class ChannelConfig(Settings, frozen=True, kw_only=True):
    """A delivery channel's settings; ``secret`` names where its credential comes from."""

    # The adapter: inbox, webhook, slack, discord or email (absent: the channel's own name).
    kind: Literal["inbox", "webhook", "slack", "discord", "email"] | None = None
    secret: SecretName | None = None
    target: str | None = None  # e.g. a Slack channel id, a webhook URL, an address


class Reminders(Settings, frozen=True, kw_only=True):
    """While a request waits: remind after ``remind_after_s`` (again every ``repeat_every_s``),
    and after ``escalate_after_s`` escalate it to the group ``escalate_to``, whose members may
    then decide it whatever the risk level's approver groups, on ``escalate_channels``."""

    remind_after_s: Annotated[int, msgspec.Meta(ge=1, le=30 * 24 * 3600)]
    repeat_every_s: Annotated[int, msgspec.Meta(ge=1, le=30 * 24 * 3600)] | None = None
    escalate_after_s: Annotated[int, msgspec.Meta(ge=1, le=30 * 24 * 3600)] | None = None
    escalate_to: GroupName | None = None
    escalate_channels: tuple[Channel, ...] = ()


class Budget(Settings, frozen=True, kw_only=True):
    period: Literal["day", "week", "month"] = "month"
    cap: Credits
    max_per_run: Credits | None = None


class Grants(Settings, frozen=True, kw_only=True):
    """How far an approver may grant similar requests when approving one (``[grants]``).

    ``max_hours``: the longest a grant may last (0: no grants in this workspace); lowering it
    also shortens the grants already given. ``granted_by``: ``approver`` (whoever may approve
    the request, as the vote that approves it) or ``admin`` (that approver must also be an
    admin of the workspace)."""

    max_hours: Annotated[float, msgspec.Meta(ge=0, le=30 * 24)] = 24
    granted_by: Literal["approver", "admin"] = "approver"


class Resume(Settings, frozen=True, kw_only=True):
    """``[resume]``: ``secret`` names the environment variable holding the Standard Webhooks
    secret (``whsec_...``) the outcome POSTed to a request's ``resume_url`` is signed with.
    Without it a request with ``resume_url`` is refused: an unsigned callback is forgeable."""

    secret: SecretName


class Passkeys(Settings, frozen=True, kw_only=True):
    """``[passkeys]``: decisions on requests of the risk levels in ``require`` must be signed
    with the deciding member's own passkey (WebAuthn), in the web inbox; every other door is
    refused with ``passkey_required`` and the link to finish there (see docs/passkeys.md)."""

    require: tuple[RiskLevel, ...] = ()


PerRequester = Annotated[int, msgspec.Meta(ge=1, le=1000)]


class Limits(Settings, frozen=True, kw_only=True):
    """Bounds on prompts, so approvals stay rare enough to be read: the most requests one
    requester may hold pending, and the most it may make in any hour (absent: no bound). A
    request over either is refused with ``rate_limited`` and nothing is stored. Requests a
    standing permission approves at once prompt nobody and are not counted."""

    max_pending_per_requester: PerRequester | None = None
    max_requests_per_hour: PerRequester | None = None


class WorkspaceSettings(Settings, frozen=True, kw_only=True):
    members: dict[Actor, Member]
    groups: dict[GroupName, tuple[Actor, ...]] = {}
    # Approvals needed by risk level (absent: 1).
    quorum: dict[RiskLevel, Quorum] = {}
    # Groups whose members may approve a risk level (absent: every member with the approver role).
    approvers: dict[RiskLevel, tuple[GroupName, ...]] = {}
    default_expiry_s: ExpirySeconds | None = None  # None: the service's default (24 hours)
    # How long after approval the action may be redeemed (started); then a reservation lapses.
    redeem_within_s: RedeemSeconds = 24 * 3600
    channels: dict[RiskLevel, tuple[Channel, ...]] = {}
    channel: dict[Channel, ChannelConfig] = {}
    # Separation of duties beyond the fixed rules: also bar the skill's owner from approving.
    bar_skill_owner: bool = False
    skill_owners: dict[str, Actor] = {}
    standing: tuple[StandingPermission, ...] = ()
    budget: Budget | None = None
    reminders: Reminders | None = None
    grants: Grants | None = None  # None: grants of up to 24 hours, by the approving approver
    limits: Limits | None = None
    resume: Resume | None = None  # None: no request may carry resume_url
    passkeys: Passkeys | None = None  # None: no decision needs a passkey

    def passkey_required(self, risk: RiskLevel) -> bool:
        return self.passkeys is not None and risk in self.passkeys.require

    def quorum_for(self, risk: RiskLevel) -> int:
        return self.quorum.get(risk, 1)

    def member_named(self, actor: str) -> str | None:
        """The member ``actor`` names (by id or alias), or None."""
        if actor in self.members:
            return actor
        for member_id, member in self.members.items():
            if actor in member.aliases:
                return member_id
        return None

    def in_group(self, member: str, group: str) -> bool:
        """Whether ``group`` names ``member``: a group may list a person by any of their names
        (one person, whichever channel's identity the file uses)."""
        return any(self.member_named(name) == member for name in self.groups.get(group, ()))


class WorkspaceFileError(ValueError):
    """The file is not a valid workspace: the message names the key."""


def parse_workspace(text: str) -> WorkspaceSettings:
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise WorkspaceFileError(f"not TOML: {error}") from None
    return settings_from_builtins(raw)


def settings_from_builtins(raw: object) -> WorkspaceSettings:
    try:
        settings = msgspec.convert(raw, WorkspaceSettings)
    except msgspec.ValidationError as error:
        from approvals.schemas.wording import (
            in_words,  # it reads this module's types: imported late
        )

        raise WorkspaceFileError(in_words(str(error))) from None
    check_consistency(settings)
    return settings


def check_consistency(settings: WorkspaceSettings) -> None:
    """What the types cannot say: names that point at nothing, an alias used twice."""
    problems: list[str] = []
    owners: dict[str, str] = {}
    for member_id, member in settings.members.items():
        for name in (member_id, *member.aliases):
            if name in owners and owners[name] != member_id:
                problems.append(f"{name} names both {owners[name]} and {member_id}")
            owners[name] = member_id
    for group, people in settings.groups.items():
        problems += [f"groups.{group}: {p} is not a member" for p in people if p not in owners]
    for risk, groups in settings.approvers.items():
        problems += [f"approvers.{risk}: no group {g}" for g in groups if g not in settings.groups]
    for risk, channels in settings.channels.items():
        problems += [
            f"channels.{risk}: {c} has no [channel.{c}] table"
            for c in channels
            if c not in settings.channel and c != "inbox"
        ]
    if settings.reminders is not None:
        r = settings.reminders
        if r.escalate_to is not None and r.escalate_to not in settings.groups:
            problems.append(f"reminders.escalate_to: no group {r.escalate_to}")
        if (r.escalate_to is None) != (r.escalate_after_s is None):
            problems.append("reminders: escalate_to and escalate_after_s go together")
        problems += [
            f"reminders.escalate_channels: {c} has no [channel.{c}] table"
            for c in r.escalate_channels
            if c not in settings.channel and c != "inbox"
        ]
    names = [rule.name for rule in settings.standing]
    problems += [f"standing: {n} is named twice" for n in set(names) if names.count(n) > 1]
    if not any("admin" in m.roles for m in settings.members.values()):
        problems.append("members: no admin (nobody could change this workspace again)")
    if problems:
        raise WorkspaceFileError("; ".join(sorted(problems)))


def flatten(value: object, prefix: str = "") -> dict[str, object]:
    """Leaf paths of a settings document, for a readable diff."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


class Change(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    before: Any = None
    after: Any = None


def diff(before: WorkspaceSettings | None, after: WorkspaceSettings) -> list[Change]:
    old = flatten(msgspec.to_builtins(before)) if before is not None else {}
    new = flatten(msgspec.to_builtins(after))
    return [
        Change(path=path, before=old.get(path), after=new.get(path))
        for path in sorted(old.keys() | new.keys())
        if old.get(path) != new.get(path)
    ]
