"""The options that choose approvals from the status view: ``approvals list`` shows what they
match, ``approvals approve --all-matching`` and ``reject --all-matching`` decide it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from collections.abc import Callable

FILTERS = ("risk_level", "skill_name", "requested_by", "created_after", "created_before")

_OPTIONS = (
    click.option("--risk", "risk_level", type=click.Choice(["low", "medium", "high", "critical"]),
                 help="Only approvals of this risk level."),
    click.option("--skill-name", help="Only requests of this skill."),
    click.option("--requested-by", help="Only requests of this requester, e.g. service:enricher."),
    click.option("--created-after", type=click.DateTime(),
                 help="Created after this ISO time (UTC if no offset)."),
    click.option("--created-before", type=click.DateTime(),
                 help="Created before this ISO time (UTC if no offset)."),
)  # fmt: skip


def filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--risk``, ``--skill-name``, ``--requested-by``, ``--created-after/-before``."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def utc(value: Any) -> Any:
    """A naive time from the command line is UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.isoformat() + "Z"
    return value
