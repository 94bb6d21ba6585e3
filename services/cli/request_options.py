"""The options of ``approvals request`` and ``approvals check``, and the request body they make:
every field a reviewer is shown (scope, preview, touches, payload) can be given here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from approvals.services.cli.params import ACTION_KINDS, ACTOR, JSON, JSON_OBJECT, PERSON

if TYPE_CHECKING:
    from collections.abc import Callable


def request_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options of a request, shared by ``request`` and ``check``."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


_OPTIONS = [
    click.option("--body", type=click.File("rb"),
                 help="A whole request body as JSON ('-' for stdin); the other options are "
                 "then ignored."),
    click.option("--requested-by", type=ACTOR,
                 help="Who asks: service:<name> or user:<id> (required without --body)."),
    click.option("--on-behalf-of", type=PERSON, help="The person the requester acts for."),
    click.option("--skill-name", default="cli", show_default=True,
                 help="The skill or workflow asking."),
    click.option("--skill-execution-id", default="cli", show_default=True,
                 help="The run of that skill."),
    click.option("--title", help="What the approver reads first (required without --body)."),
    click.option("--summary", default="", help="A few sentences on what will happen."),
    click.option("--risk", "risk_level", default="medium", show_default=True,
                 type=click.Choice(["low", "medium", "high", "critical"]),
                 help="Decides the channels and the quorum."),
    click.option("--kind", default="other", show_default=True, type=click.Choice(ACTION_KINDS),
                 help="What the action does; decides whether it needs approval."),
    click.option("--mode", default="live", show_default=True,
                 type=click.Choice(["live", "dry_run", "smoke_test"]),
                 help="live writes or spends; dry_run and smoke_test rehearse."),
    click.option("--provider", help="The tool, CRM, outbound system or social action."),
    click.option("--destination",
                 help="The external account, campaign, list, CRM object or table column."),
    click.option("--max-credits", type=click.FloatRange(min=0),
                 help="The credit ceiling: the run may not use more."),
    click.option("--expected-credits", type=click.FloatRange(min=0),
                 help="What the run is expected to use."),
    click.option("--table", help="Scope: the table it reads or writes."),
    click.option("--column", help="Scope: the column it runs or fills."),
    click.option("--workflow", help="Scope: the workflow it fires."),
    click.option("--filters", type=JSON_OBJECT,
                 help='Scope: the row filters, as a JSON object, e.g. \'{"country": "DE"}\'.'),
    click.option("--row-id", "row_ids", multiple=True,
                 help="Scope: one row it touches; repeat for each."),
    click.option("--row-count", type=click.IntRange(min=0), help="Scope: how many rows."),
    click.option("--preview", type=JSON,
                 help="Sample inputs and outputs or a preflight result, as JSON "
                 "(a quoted JSON string for plain text)."),
    click.option("--touches", multiple=True, type=click.Choice(ACTION_KINDS),
                 help="For --kind workflow_fire: a kind of action its steps take; repeat for "
                 "each (without it a workflow counts as one that may write)."),
    click.option("--payload", type=JSON, help="The proposed payload as JSON."),
    click.option("--idempotency-key",
                 help="The same key again returns the first request instead of a new one."),
    click.option("--trace-id", help="Your trace id, recorded on the events."),
    click.option("--expires-in", "expires_in_s", type=click.IntRange(1, 30 * 24 * 3600),
                 help="Seconds until it expires (default: the workspace's)."),
]  # fmt: skip

_ACTION = ("kind", "mode", "provider", "destination", "max_credits", "expected_credits",
           "preview")  # fmt: skip
_SCOPE = ("table", "column", "workflow", "filters", "row_ids", "row_count")


def request_body(fields: dict[str, Any]) -> dict[str, Any]:
    """The request body from the options (``fields`` is consumed)."""
    if not fields["requested_by"]:
        raise click.UsageError(
            "--requested-by is required: who asks, e.g. service:enricher or user:ana"
        )
    if not fields["title"]:
        raise click.UsageError("--title is required (or give a whole body with --body)")
    action = {key: fields.pop(key) for key in _ACTION}
    scope = {key: fields.pop(key) for key in _SCOPE}
    scope["row_ids"] = list(scope["row_ids"]) or None
    touches = fields.pop("touches")
    action["touches"] = list(touches) if touches else None
    action["scope"] = {k: v for k, v in scope.items() if v is not None} or None
    fields["proposed_payload"] = fields.pop("payload")
    fields["action"] = {k: v for k, v in action.items() if v is not None}
    return fields
