"""Recomputing the hash chain and the log hash, and checking them against signed checkpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal
from uuid import UUID

import msgspec

from approvals.schemas import chain
from approvals.schemas.audit import Checkpoint, Problem, Verification
from approvals.schemas.codec import canonical_encoder
from approvals.services.audit.passkeys import LogAudit

if TYPE_CHECKING:
    from collections.abc import Iterable

    from approvals.services.approvals.notification_log import Record


class Verifier:
    """Feed it the log in order; it keeps every aggregate's last link and the log hash.

    The first problem is the earliest in the log. After a problem it goes on with the hash the
    event carries, so one changed event is reported once, not with everything after it.
    """

    def __init__(self, checkpoints: Iterable[Checkpoint] = ()) -> None:
        self.links: dict[UUID | str, str] = {}
        self.versions: dict[UUID | str, int] = {}
        self.log_hash = chain.GENESIS
        self.events = 0
        self.position = 0
        self.unsealed = 0
        self.problems: list[Problem] = []
        self._checkpoints = sorted(checkpoints, key=lambda c: c.position)
        self._next = 0  # the next checkpoint to check
        self.last_checkpoint: int | None = None
        self.checked = 0
        self.signed = LogAudit()  # every passkey-signed vote and decision, checked in order

    def feed(self, records: Iterable[Record]) -> None:
        decode, encode = msgspec.json.decode, canonical_encoder.encode
        link, fold = chain.link, chain.fold
        links, versions = self.links, self.versions
        for record in records:
            if self._next < len(self._checkpoints):
                self._check_through(record.id - 1)
            aggregate, version = record.originator_id, record.originator_version
            try:
                raw = decode(record.state)
                stored = raw.pop("hash", "")
                body = encode(raw)
            except (msgspec.DecodeError, AttributeError):
                self._problem("unreadable", record, None, "the stored event is not a JSON object")
                continue
            self.log_hash = fold(self.log_hash, stored, body)
            self.events += 1
            self.position = record.id
            event_type = raw.get("type")
            if event_type in LogAudit.TYPES:
                self._passkeys(record, raw)
            before = versions.get(aggregate)
            computed = link(links.get(aggregate, chain.GENESIS), body)
            if raw.get("version") != version:
                self._problem("version_mismatch", record, event_type,
                              f"the event says version {raw.get('version')!r}, "
                              f"the store files it as version {version}")  # fmt: skip
            elif before is not None and version != before + 1:
                self._problem("missing_event", record, event_type,
                              f"version {before + 1} of this aggregate is missing "
                              f"(the one before this is version {before})")  # fmt: skip
            if raw.get("schema_version", 1) >= 2 or stored:  # sealed: a hash to check
                if before is None and version > 1:
                    pass  # an export that starts after this aggregate's first event: its anchor
                elif stored != computed:
                    self._problem("hash_mismatch", record, event_type,
                                  f"the stored hash {stored[:16]}... is not the recomputed "
                                  f"{computed[:16]}...: this event, or the one before it in "
                                  "its aggregate, was changed after it was stored")  # fmt: skip
                links[aggregate] = stored or computed
            else:
                self.unsealed += 1
                links[aggregate] = computed
            versions[aggregate] = version

    def _passkeys(self, record: Record, raw: dict[str, object]) -> None:
        try:
            failed = self.signed.feed(raw)
        except (KeyError, ValueError, TypeError, msgspec.ValidationError) as error:
            self._problem("passkey_invalid", record, raw.get("type"),
                          f"a passkey registration or assertion does not read: {error}",
                          reason="malformed")  # fmt: skip
            return
        if failed is not None:
            self._problem("passkey_invalid", record, raw.get("type"),
                          f"{failed.member}'s passkey does not sign this decision: "
                          f"{failed.message}", reason=failed.reason)  # fmt: skip

    def finish(self, source: Literal["store", "export"]) -> Verification:
        self._check_through(self.position)
        for checkpoint in self._checkpoints[self._next :]:
            self.checked += 1
            self.problems.append(Problem(
                code="log_truncated", position=checkpoint.position,
                message=f"a checkpoint signed at {checkpoint.at.isoformat()} covers "
                        f"{checkpoint.events} events up to position {checkpoint.position}, "
                        f"but the log ends at position {self.position} after {self.events}",
            ))  # fmt: skip
        self._next = len(self._checkpoints)
        first = min(self.problems, key=lambda p: p.position) if self.problems else None
        return Verification(
            ok=not self.problems, source=source, events=self.events,
            aggregates=len(self.versions), position=self.position, log_hash=self.log_hash,
            unsealed=self.unsealed, checkpoints=self.checked,
            last_checkpoint=self.last_checkpoint, first_problem=first,
            problems=len(self.problems), passkeys=self.signed.checked,
        )  # fmt: skip

    def _check_through(self, position: int) -> None:
        """Check every checkpoint at or before ``position``: the log hash now covers them."""
        while self._next < len(self._checkpoints):
            checkpoint = self._checkpoints[self._next]
            if checkpoint.position > position:
                return
            self._next += 1
            self.checked += 1
            if checkpoint.log_hash == self.log_hash and checkpoint.events == self.events:
                self.last_checkpoint = checkpoint.position
                continue
            since = self.last_checkpoint or 0
            self.problems.append(Problem(
                code="checkpoint_mismatch", position=checkpoint.position,
                message=f"the log up to position {checkpoint.position} ({self.events} events) "
                        f"differs from the checkpoint signed at {checkpoint.at.isoformat()} "
                        f"({checkpoint.events} events): an event after position {since} and "
                        f"up to {checkpoint.position} was changed, added or removed",
            ))  # fmt: skip

    def _problem(self, code: str, record: Record, event_type: object, message: str,
                 reason: str | None = None) -> None:  # fmt: skip
        self.problems.append(Problem(
            code=code,  # type: ignore[arg-type]
            position=record.id, aggregate_id=UUID(str(record.originator_id)),
            version=record.originator_version,
            type=str(event_type) if event_type is not None else None, message=message,
            reason=reason,
        ))  # fmt: skip
