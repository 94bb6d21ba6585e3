"""Audit: history, replay, export, report, verify and checkpoints.

They read the event store named by the settings (APPROVALS_STORE, APPROVALS_SQLITE_PATH or
APPROVALS_POSTGRES_DSN), or, where an auditor has no database access, the JetStream stream or an
export file. Progress goes to stderr; the result to stdout (JSON with --json).

The modules by job: ``reading`` and ``sealing`` hold the commands, ``comparison`` the replay
against the live read model, ``rendering`` the text a person reads; this one what they share.
"""

from __future__ import annotations

import contextlib
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from approvals.schemas.codec import encoder
from approvals.services.cli import Context, cli, console
from approvals.services.runtime.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import msgspec
    from click._termui_impl import ProgressBar

    from approvals.services.approvals.application import Approvals
    from approvals.services.approvals.notification_log import Record


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@cli.group()
def audit() -> None:
    """Replay and check the log: who asked, who decided, what ran, and that nobody changed it."""


def when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Refused(
            "invalid", f"{name} must be an ISO 8601 time, such as 2026-11-30T12:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@contextlib.contextmanager
def open_store() -> Iterator[Approvals]:
    from approvals.services.approvals.application import Approvals
    from approvals.services.approvals.store import store_env

    settings = Settings.from_env()
    if settings.store == "sqlite" and not settings.sqlite_path.is_file():
        raise Refused(
            "not_found",
            f"no event store at {settings.sqlite_path} "
            "(set APPROVALS_SQLITE_PATH, or APPROVALS_STORE=postgres)",
        )
    app = Approvals({**store_env(settings), "CREATE_TABLE": "false"})
    try:
        yield app
    finally:
        app.close()


def progress(
    label: str, total: int, sections: Iterator[Sequence[Record]]
) -> Iterator[Sequence[Record]]:
    """The sections, with a progress bar on stderr (shown on a terminal).

    ``total`` is the last position to read. The bar moves by positions, not by events: the
    store's ids have gaps (a rolled-back insert still used its id), so counting events would
    stop short of the total."""
    bar: ProgressBar[int]
    with click.progressbar(
        length=max(total, 1), label=label, file=sys.stderr, show_pos=True
    ) as bar:
        for section in sections:
            yield section
            if section:
                bar.update(min(section[-1].id, total) - bar.pos)


def emit(obj: Context, document: msgspec.Struct, text: str) -> None:
    click.echo(encoder.encode(document).decode() if obj.as_json else text)


def run(obj: Context, work: Any) -> None:
    try:
        sys.exit(work())
    except Refused as refused:
        console.fail(obj.as_json, refused.code, str(refused))
        sys.exit(1)


# The commands register themselves on the group when imported.
from approvals.services.cli.audit import reading, sealing  # noqa: E402, F401
