"""Commands: what callers ask the command service to do (imperative names)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from approvals.schemas.passkeys import Assertion, Challenge, CredentialId
from approvals.schemas.types import (
    END,
    ActionKind,
    Actor,
    Credits,
    Digest,
    LongText,
    Mode,
    Name,
    Person,
    RiskLevel,
    ShortText,
)
from approvals.schemas.workspace import WorkspaceSettings

IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
ExpiresIn = Annotated[int, msgspec.Meta(ge=1, le=30 * 24 * 3600)]
# An http(s) URL with a host; where it may point (SSRF) is checked when it is called.
ResumeUrl = Annotated[
    str, msgspec.Meta(pattern=r"^https?://[^\s/?#@]+([/?#]\S*)?" + END, max_length=2000)
]


class Scope(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the action touches: the seed's table, column, workflow, filters, rows."""

    table: ShortText | None = None
    column: ShortText | None = None
    workflow: ShortText | None = None
    filters: dict[str, Any] | None = None
    row_ids: tuple[str, ...] | None = None
    row_count: Annotated[int, msgspec.Meta(ge=0)] | None = None


class Action(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The high-impact action a caller wants to take."""

    kind: ActionKind
    mode: Mode
    provider: ShortText | None = None
    destination: ShortText | None = None
    scope: Scope = Scope()
    max_credits: Credits | None = None
    expected_credits: Credits | None = None
    preview: Any = None
    # For a workflow fire: the kinds of action its steps take (absent: unknown, so it may write).
    touches: tuple[ActionKind, ...] | None = None


Door = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}" + END)]


class Via(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The door a command came in by and how its sender proved who they are.

    Set by the door (the CLI, the gateway, the Slack/Discord/email callbacks, the client
    library), recorded on every event the command causes, and shown to auditors. ``channel``:
    ``cli``, ``client``, ``api``, ``web``, ``email``, ``slack``, ``discord``, ``mcp``.
    ``auth``: ``nats`` (the bus connection's credentials), ``api_key``, ``session`` (a web
    sign-in), ``email_link``, ``slack_signature``, ``discord_signature``. ``ref`` names the
    credential or identity the door checked (an API key id, the sign-in method, a Slack or
    Discord user id), never a secret.
    """

    channel: Door
    auth: Door
    ref: ShortText | None = None


class Command(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every command body."""

    via: Via | None = None  # the door it came in by (see Via); recorded on its events


class Request(Command, frozen=True, kw_only=True):
    """Ask for a human decision before ``action`` runs."""

    requested_by: Actor
    skill_name: Name
    skill_execution_id: Name
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    summary: LongText
    risk_level: RiskLevel
    action: Action
    idempotency_key: IdempotencyKey | None = None
    on_behalf_of: Person | None = None
    proposed_payload: Any = None
    trace_id: ShortText | None = None
    expires_in_s: ExpiresIn | None = None
    # A JSON Schema for proposed_payload: the web inbox renders a form from it, and an edited
    # payload must validate against it (checked, and size-bounded, when the request comes in).
    payload_schema: dict[str, Any] | None = None
    # Where to POST the outcome (signed per Standard Webhooks with the workspace's ``[resume]``
    # secret) once it is decided, expired or cancelled: a workflow engine's callback URL.
    resume_url: ResumeUrl | None = None


class Edits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an approver changes before approving: narrower, never wider, never elsewhere.

    A field left out (or null) is unchanged. ``scope`` names only the parts that change
    (``row_ids`` a subset, with its ``row_count``; ``filters`` that keep every original
    key/value). ``kind``, ``mode``, ``provider`` and ``destination`` are named so that a change
    of them is refused with the field named; they may only repeat the requested value.
    """

    max_credits: Credits | None = None
    scope: Scope | None = None
    proposed_payload: Any | msgspec.UnsetType = msgspec.UNSET  # absent: the payload stays
    kind: ActionKind | None = None
    mode: Mode | None = None
    provider: ShortText | None = None
    destination: ShortText | None = None


class GrantTerms(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """With an approval: approve similar requests at once for a while (same requester, kind,
    provider and destination; the same or a lower risk level).

    ``hours``: how long (at most the workspace's ``[grants] max_hours``). ``max_credits``: the
    most credits each covered run may ask for (absent: the approved request's ceiling).
    ``runs``: the most requests it covers per day (UTC; absent: no count, only the budget)."""

    hours: Annotated[float, msgspec.Meta(gt=0, le=30 * 24)]
    max_credits: Credits | None = None
    runs: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None


class Approve(Command, frozen=True, kw_only=True):
    approval_id: UUID
    approver: Actor
    digest: Digest  # of what the approver saw: the requested action, or the current proposal
    reason: LongText | None = None
    for_member: Person | None = None  # deciding in a member's place, under their delegation
    grant: GrantTerms | None = None  # also grant similar requests for a while (see GrantTerms)
    edits: Edits | None = None  # approve a narrower version instead (a new digest)
    # Where the workspace requires a passkey at this risk level: the approver's WebAuthn
    # assertion over this decision's challenge (schemas/passkeys.py); only the web inbox runs it.
    passkey: Assertion | None = None


class Reject(Command, frozen=True, kw_only=True):
    approval_id: UUID
    approver: Actor
    reason: LongText | None = None
    rerun: bool = False
    for_member: Person | None = None
    passkey: Assertion | None = None  # as Approve's: where the workspace requires a passkey


class Cancel(Command, frozen=True, kw_only=True):
    approval_id: UUID
    by: Actor
    reason: LongText | None = None


class Expire(Command, frozen=True, kw_only=True):
    approval_id: UUID
    by: Actor = "service:scheduler"


class Deliver(Command, frozen=True, kw_only=True):
    approval_id: UUID
    channel: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}" + END)]
    target: ShortText
    external_ref: ShortText | None = None
    by: Actor = "service:delivery"
    # Set when the channel could not take it after every attempt: recorded as delivery_failed.
    error: LongText | None = None
    attempts: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1


class Check(Request, frozen=True, kw_only=True):
    """Would this request need approval, and why? Nothing is stored."""


class Configure(Command, frozen=True, kw_only=True):
    """Put ``settings`` in force for the workspace (``by`` must be one of its admins)."""

    settings: WorkspaceSettings
    by: Person


class Delegate(Command, frozen=True, kw_only=True):
    """``by`` lets ``to`` decide in their place until ``ends_at`` (a past time ends it)."""

    by: Person
    to: Person
    ends_at: datetime
    reason: LongText | None = None


class Redeem(Command, frozen=True, kw_only=True):
    """The executor is about to run the action whose digest it names: once, before the deadline.

    With ``action`` (and ``proposed_payload``, as in the request) the service also checks them,
    and a ``digest_mismatch`` says which of them differs from what was approved."""

    approval_id: UUID
    digest: Digest
    executor: Actor
    action: Action | None = None
    proposed_payload: Any = None  # compared only when ``action`` is given


class Report(Command, frozen=True, kw_only=True):
    """What the run did, once, after it was redeemed."""

    approval_id: UUID
    credits_used: Credits
    outcome: Literal["succeeded", "failed", "partial"]
    summary: LongText = ""
    external_refs: tuple[ShortText, ...] = ()
    by: Actor


class Remind(Command, frozen=True, kw_only=True):
    """Remind the approvers of a request still waiting (the scheduler, when it is due)."""

    approval_id: UUID
    by: Actor = "service:scheduler"


class Escalate(Command, frozen=True, kw_only=True):
    """Escalate a request nobody decided in time to the workspace's escalation group."""

    approval_id: UUID
    by: Actor = "service:scheduler"


class CheckSpend(Command, frozen=True, kw_only=True):
    """Check a new request's credit ceiling against its workspace's budget (the spend-cap
    service sends it on ``requested``): ``spend_checked``, or rejected if it can never fit."""

    approval_id: UUID
    by: Actor = "service:spendcap"


class Release(Command, frozen=True, kw_only=True):
    """Give back the credits held for an approval nobody redeemed before its deadline."""

    approval_id: UUID
    by: Actor = "service:spendcap"


KeyId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]{12,32}" + END)]


class CreateApiKey(Command, frozen=True, kw_only=True):
    """An API key for ``actor`` (a member): only the SHA-256 of its secret is ever sent or kept."""

    key_id: KeyId
    secret_sha256: Digest
    actor: Actor
    name: ShortText = ""
    by: Person  # an admin of the workspace


class RevokeApiKey(Command, frozen=True, kw_only=True):
    key_id: KeyId
    by: Person


class RevokeGrant(Command, frozen=True, kw_only=True):
    """End a grant now: from this moment it covers nothing (``grant_id``: its id, the id of the
    approval it was given with). ``by``: the member who gave it, or an approver or admin."""

    grant_id: UUID
    by: Person
    reason: LongText | None = None


class Respond(Command, frozen=True, kw_only=True):
    """Answer a request with ``message`` instead of deciding it (the agent asked the wrong
    question, or must say more first): it ends ``responded``, is never redeemable, and the
    requester gets the message back as it would a rejection's reason. Who may: whoever may
    approve it (people only, separation of duties applies)."""

    approval_id: UUID
    approver: Actor
    message: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    for_member: Person | None = None


class RegisterPasskey(Command, frozen=True, kw_only=True):
    """``member`` registers a passkey: ``credential`` is what ``navigator.credentials.create()``
    returned (its JSON form), over ``challenge`` (base64url) that the web inbox issued for this
    sign-in ``session``, at ``origin`` for the relying party ``rp_id``. The command service
    checks it with the ``webauthn`` library (user verification required) and records it."""

    member: Person
    credential: dict[str, Any]
    challenge: Challenge
    rp_id: ShortText
    origin: ShortText
    session: ShortText | None = None
    name: ShortText = ""


class RemovePasskey(Command, frozen=True, kw_only=True):
    """Remove a registered passkey: it signs nothing from now on (``by``: its member, or an
    admin of the workspace)."""

    credential_id: CredentialId
    by: Person
    reason: LongText | None = None


COMMANDS: dict[str, type[Command]] = {
    "request": Request,
    "approve": Approve,
    "reject": Reject,
    "cancel": Cancel,
    "expire": Expire,
    "deliver": Deliver,
    "check": Check,
    "configure": Configure,
    "delegate": Delegate,
    "redeem": Redeem,
    "report": Report,
    "check_spend": CheckSpend,
    "remind": Remind,
    "escalate": Escalate,
    "release": Release,
    "create_api_key": CreateApiKey,
    "revoke_api_key": RevokeApiKey,
    "revoke_grant": RevokeGrant,
    "respond": Respond,
    "register_passkey": RegisterPasskey,
    "remove_passkey": RemovePasskey,
}
