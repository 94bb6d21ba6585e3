"""Events: what happened (past tense). Stored in the event store and published on the bus.

Stored topics are ``schemas.events:<ClassName>`` (the module's name before it was installed under
``approvals``: ``services/approvals/store.py`` keeps writing it): never rename a class once events
of it are stored. New fields always get defaults; a change of shape is a new ``schema_version``
with an upcaster in ``schemas/upcasting.py`` and a fixture of the old version in
``tests/fixtures/events``.

Versions: 1, the first release. 2 adds ``hash`` (the event's link in its aggregate's hash chain,
see ``schemas/chain.py``) and ``via`` (the door the causing command came in by, and how its sender
was authenticated); version 1 events are read as version 2 with neither recorded.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, get_args
from uuid import UUID

import msgspec

from approvals.schemas.commands import Action, Via
from approvals.schemas.passkeys import SignedDecision
from approvals.schemas.receipts import Receipt
from approvals.schemas.types import ActionKind, Actor, RiskLevel
from approvals.schemas.workspace import Change, WorkspaceSettings

SCHEMA_VERSION = 2


class EventBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """What every stored event is, whichever aggregate it belongs to: a Struct tagged by
    ``type`` and eventsourcing's DomainEventProtocol (``originator_id``, ``originator_version``).

    The two families (``Event`` of an approval, ``WorkspaceEvent`` of a workspace's settings,
    allowances, budgets and keys) declare their fields themselves, in their wire order: msgspec
    puts a base's fields before a subclass's, so fields declared here would move each family's
    id and ``trace_id`` on the wire, in stored JSON and in the published schemas."""

    if TYPE_CHECKING:  # declared by both families, in their own order (see above)
        event_id: UUID
        version: int
        workspace_id: str
        occurred_at: datetime
        actor: Actor
        schema_version: int
        via: Via | None
        hash: str

        @property
        def originator_id(self) -> UUID: ...

    @property
    def originator_version(self) -> int:
        return self.version

    @property
    def event_type(self) -> str:
        return str(type(self).__struct_config__.tag)


class Event(EventBase, frozen=True, kw_only=True):
    """Fields every event of an approval carries."""

    event_id: UUID
    approval_id: UUID
    version: int
    workspace_id: str
    occurred_at: datetime
    actor: Actor
    trace_id: str | None = None
    schema_version: int = SCHEMA_VERSION
    via: Via | None = None  # the door the causing command came in by; None for the services
    hash: str = ""  # SHA-256 chaining this event to the one before it (set when stored)

    @property
    def originator_id(self) -> UUID:
        return self.approval_id


class Requested(Event, frozen=True, kw_only=True, tag="requested"):
    requested_by: Actor
    skill_name: str
    skill_execution_id: str
    title: str
    summary: str
    risk_level: RiskLevel
    action: Action
    digest: str
    expires_at: datetime
    idempotency_key: str | None = None
    on_behalf_of: str | None = None
    proposed_payload: Any = None
    quorum: int = 1  # approvals needed, fixed when asked: a later workspace change moves nothing
    payload_schema: dict[str, Any] | None = None  # a JSON Schema for proposed_payload
    resume_url: str | None = None  # the outcome is POSTed there (see the delivery service)


class FieldChange(msgspec.Struct, frozen=True, kw_only=True):
    """One change an approver made to what will run, as a reviewer reads it: the path of the
    field in the request (``/max_credits``, ``/scope/row_ids``, ``/proposed_payload/subject``),
    its requested value and its value in the edited version (absent: null)."""

    path: str
    before: Any = None
    after: Any = None


class VoteCast(Event, frozen=True, kw_only=True, tag="vote_cast"):
    """One person's approval, counted towards the quorum."""

    voter: str  # the member who acted, whichever alias or channel they used
    signed_as: str  # the actor name the command carried
    for_member: str | None = None  # the member they stood in for (a delegation): the vote is theirs
    digest: str  # the version voted for
    reason: str | None = None
    # Set when the vote proposes an edited version (the approver's edits): what it would run
    # and how that differs from the request. Votes for another version never count toward it.
    action: Action | None = None
    proposed_payload: Any = None
    changes: tuple[FieldChange, ...] = ()
    passkey: SignedDecision | None = None  # the voter's passkey assertion, where one is required


class Delivered(Event, frozen=True, kw_only=True, tag="delivered"):
    channel: str
    target: str
    external_ref: str | None = None


class DeliveryFailed(Event, frozen=True, kw_only=True, tag="delivery_failed"):
    """A channel did not take the request after every attempt (the others may have)."""

    channel: str
    target: str
    error: str
    attempts: int = 1


class Reminded(Event, frozen=True, kw_only=True, tag="reminded"):
    """The approvers were reminded (the ``count``-th time) that the request still waits."""

    count: int


class Escalated(Event, frozen=True, kw_only=True, tag="escalated"):
    """Nobody decided in time: the members of ``group`` may now decide it too."""

    group: str


class Approved(Event, frozen=True, kw_only=True, tag="approved"):
    digest: str
    reason: str | None = None
    votes: tuple[str, ...] = ()  # the members whose votes met the quorum
    for_member: str | None = None
    # The action must be redeemed (started) before this time; None: by the request's deadline.
    redeem_by: datetime | None = None
    # The budget period whose committed credits hold this approval's ceiling, if any.
    budget_period: str | None = None
    receipt: Receipt | None = None  # signed by the command service: who approved exactly what
    # The digest that was requested (``digest`` is the approved one; they differ after an edit;
    # None in events stored before edits existed: the same as ``digest``).
    requested_digest: str | None = None
    # After an edit: the approved action and payload, and how they differ from the request.
    action: Action | None = None
    proposed_payload: Any = None
    changes: tuple[FieldChange, ...] = ()
    # Where a passkey is required: the deciding vote's assertion, and every approver's (the
    # votes that met the quorum, this one last), which the receipt carries too.
    passkey: SignedDecision | None = None
    passkeys: tuple[SignedDecision, ...] = ()


class SpendPicture(msgspec.Struct, frozen=True, kw_only=True):
    """A workspace's budget against one request's ceiling: what a reviewer needs to see.

    Without a budget or a ceiling the numbers are None; ``fits`` says whether the ceiling fits
    in what remains now (it may still not fit when someone approves: the reservation decides).
    """

    period: str | None = None
    cap: float | None = None
    max_per_run: float | None = None
    committed: float | None = None
    remaining: float | None = None
    ceiling: float | None = None
    fits: bool = True


class SpendChecked(Event, frozen=True, kw_only=True, tag="spend_checked"):
    """The budget picture when the request came in (recorded for the spend-cap service)."""

    spend: SpendPicture


class Redeemed(Event, frozen=True, kw_only=True, tag="redeemed"):
    """The executor is about to run exactly the approved action (once, digest checked)."""

    executor: Actor
    digest: str


class RunReported(Event, frozen=True, kw_only=True, tag="run_reported"):
    """What the run did; usage over the ceiling is recorded and flagged, never hidden."""

    credits_used: float
    outcome: str
    summary: str = ""
    external_refs: tuple[str, ...] = ()
    over_ceiling: bool = False


class Rejected(Event, frozen=True, kw_only=True, tag="rejected"):
    reason: str | None = None
    rerun: bool = False
    for_member: str | None = None
    passkey: SignedDecision | None = None  # the rejecting member's assertion, where required


class Expired(Event, frozen=True, kw_only=True, tag="expired"):
    pass


class Cancelled(Event, frozen=True, kw_only=True, tag="cancelled"):
    reason: str | None = None


class WorkspaceEvent(EventBase, frozen=True, kw_only=True):
    """Fields every event of a workspace's settings carries."""

    event_id: UUID
    aggregate_id: UUID  # the settings (uuid5 of the workspace id) or a standing allowance
    version: int
    workspace_id: str
    occurred_at: datetime
    actor: Actor
    schema_version: int = SCHEMA_VERSION
    via: Via | None = None
    hash: str = ""

    @property
    def originator_id(self) -> UUID:
        return self.aggregate_id


class WorkspaceConfigured(WorkspaceEvent, frozen=True, kw_only=True, tag="workspace_configured"):
    """The settings in force from now on, and what changed (``actor`` made the change)."""

    settings: WorkspaceSettings
    changes: tuple[Change, ...]


class Delegated(WorkspaceEvent, frozen=True, kw_only=True, tag="delegated"):
    """``delegator`` lets ``delegate`` decide in their place until ``ends_at``."""

    delegator: str
    delegate: str
    ends_at: datetime
    reason: str | None = None


class StandingUsed(WorkspaceEvent, frozen=True, kw_only=True, tag="standing_used"):
    """A standing permission approved ``approval_id``; ``total`` is the day's use so far."""

    rule: str
    day: str
    approval_id: UUID
    credits: float
    total: float


class CreditsReserved(WorkspaceEvent, frozen=True, kw_only=True, tag="credits_reserved"):
    """An approval's ceiling committed against its workspace's budget for ``period``."""

    period: str
    approval_id: UUID
    credits: float
    committed: float  # after this reservation
    cap: float


class CreditsSettled(WorkspaceEvent, frozen=True, kw_only=True, tag="credits_settled"):
    """A reported run replaces its reservation with what it used."""

    period: str
    approval_id: UUID
    reserved: float
    used: float
    committed: float  # after settling
    cap: float


class CreditsReleased(WorkspaceEvent, frozen=True, kw_only=True, tag="credits_released"):
    """An approval nobody redeemed before its deadline gives its reservation back."""

    period: str
    approval_id: UUID
    credits: float
    committed: float  # after releasing
    cap: float


class ApiKeyCreated(WorkspaceEvent, frozen=True, kw_only=True, tag="api_key_created"):
    """An API key that acts as the member ``acts_as``; only its secret's SHA-256 is kept."""

    key_id: str
    secret_sha256: str
    acts_as: str
    name: str = ""


class ApiKeyRevoked(WorkspaceEvent, frozen=True, kw_only=True, tag="api_key_revoked"):
    key_id: str


class GrantGiven(WorkspaceEvent, frozen=True, kw_only=True, tag="grant_given"):
    """``actor`` approved ``grant_id`` (an approval's id, which names the grant too) and granted
    requests like it for a while: the same ``requested_by``, ``kind``, ``provider`` and
    ``destination``, at most ``risk_level``, each up to ``max_credits`` (None: only requests
    without a ceiling), at most ``runs`` a day (None: no count), until ``expires_at``.
    The aggregate is the slot of these four: a new grant there replaces the one before."""

    grant_id: UUID
    requested_by: Actor
    kind: ActionKind
    provider: str | None = None
    destination: str | None = None
    risk_level: RiskLevel
    max_credits: float | None = None
    runs: int | None = None
    hours: float
    expires_at: datetime


class GrantUsed(WorkspaceEvent, frozen=True, kw_only=True, tag="grant_used"):
    """Grant ``grant_id`` approved ``approval_id`` at once: its ``runs``-th run on ``day``."""

    grant_id: UUID
    approval_id: UUID
    day: str
    runs: int
    credits: float | None = None


class GrantRevoked(WorkspaceEvent, frozen=True, kw_only=True, tag="grant_revoked"):
    """``actor`` ended grant ``grant_id``: from now on it covers nothing."""

    grant_id: UUID
    reason: str | None = None


class PasskeyRegistered(WorkspaceEvent, frozen=True, kw_only=True, tag="passkey_registered"):
    """``member`` registered a passkey (WebAuthn credential) from the web inbox, signed in as
    themselves (``session``: how). The aggregate is the credential (uuid5 of workspace and
    credential id). ``public_key``: base64url of its COSE key; ``rp_id`` and ``origin``: where
    it was registered, which its assertions must name too."""

    member: str
    credential_id: str
    public_key: str
    algorithm: int
    sign_count: int
    rp_id: str
    origin: str
    session: str | None = None
    name: str = ""


class PasskeyRemoved(WorkspaceEvent, frozen=True, kw_only=True, tag="passkey_removed"):
    """The credential no longer signs anything (removed by its member or an admin)."""

    member: str
    credential_id: str
    reason: str | None = None


class PasskeyUsed(WorkspaceEvent, frozen=True, kw_only=True, tag="passkey_used"):
    """The credential signed a decision on ``approval_id``: its counter is now ``sign_count``
    (saved with the decision, so the same assertion, or an older one, is refused after it)."""

    member: str
    credential_id: str
    approval_id: UUID
    sign_count: int


class PendingHeld(msgspec.Struct, frozen=True, kw_only=True):
    """A request its requester holds pending, until when."""

    approval_id: UUID
    expires_at: datetime


class RequestCounted(WorkspaceEvent, frozen=True, kw_only=True, tag="request_counted"):
    """A request counted against its requester's limits (``aggregate_id``: uuid5 of workspace
    and requester). It carries the whole count after it (those still pending, and when the
    requests of the last hour came in), so loading the count reads only the last one."""

    requester: str
    approval_id: UUID
    pending: tuple[PendingHeld, ...] = ()  # with this one; tracked under a pending limit
    recent: tuple[datetime, ...] = ()  # with this one; tracked under an hourly limit


class Responded(Event, frozen=True, kw_only=True, tag="responded"):
    """A person answered with ``message`` instead of deciding: the request ends here, and the
    requester reads the message (in the approval's ``reason``) as it would a rejection's."""

    message: str
    for_member: str | None = None


BudgetEvent = CreditsReserved | CreditsSettled | CreditsReleased
ApprovalEvent = (
    Requested | SpendChecked | Delivered | DeliveryFailed | Reminded | Escalated | VoteCast
    | Approved | Rejected | Expired | Cancelled | Redeemed | RunReported | Responded
)  # fmt: skip
AnyEvent = (
    ApprovalEvent | WorkspaceConfigured | Delegated | StandingUsed | CreditsReserved
    | CreditsSettled | CreditsReleased | ApiKeyCreated | ApiKeyRevoked | GrantGiven | GrantUsed
    | GrantRevoked | RequestCounted | PasskeyRegistered | PasskeyRemoved | PasskeyUsed
)  # fmt: skip
# Every event type, derived from the union the decoders use (a test checks that it names every
# subclass of EventBase, so a new event cannot be left out of one of them).
EVENT_TYPES: tuple[type[EventBase], ...] = get_args(AnyEvent)
