"""What the CLI prints: JSON for machines, aligned tables for people."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
import msgspec

from schemas.codec import encode_error, encoder

if TYPE_CHECKING:
    from collections.abc import Sequence

    from schemas.events import Event
    from schemas.queries import ApprovalView, ListReply, TimelineEntry, WaitReply
    from schemas.replies import AnyReply, ApprovalState


def table(rows: Sequence[tuple[str, Any]]) -> str:
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {'' if value is None else value}" for key, value in rows)


def fail(as_json: bool, code: str, message: str, raw: bytes | None = None) -> None:
    """Print an error: the reply as it came (``raw``) or the one error shape."""
    if as_json:
        click.echo(raw.decode() if raw else encode_error(code, message).decode())
    else:
        click.echo(f"error [{code}]: {message}", err=True)


def print_reply(reply: AnyReply) -> None:
    if not reply.ok:
        assert reply.error is not None
        click.echo(f"error [{reply.error.code}]: {reply.error.message}", err=True)
        for key, value in reply.error.details.items():
            click.echo(f"  {key}: {value}", err=True)
        return
    rows: list[tuple[str, Any]] = [("outcome", reply.outcome)]
    if reply.replayed:
        rows.append(("replayed", "yes: an earlier request with this idempotency key"))
    if reply.approval is not None:
        rows.extend(_approval_rows(reply.approval))
    click.echo(table(rows))


def _approval_rows(state: ApprovalState) -> list[tuple[str, Any]]:
    action = state.action
    return [
        ("id", state.id),
        ("workspace", state.workspace_id),
        ("status", state.status),
        ("title", state.title),
        ("summary", state.summary),
        ("risk", state.risk_level),
        ("requested by", state.requested_by),
        ("on behalf of", state.on_behalf_of),
        ("skill", f"{state.skill_name} ({state.skill_execution_id})"),
        ("action", f"{action.kind} {action.mode} {action.provider or ''}".rstrip()),
        ("destination", action.destination),
        ("max credits", action.max_credits),
        ("digest", state.digest),
        ("created", state.created_at.isoformat()),
        ("expires", state.expires_at.isoformat()),
        ("resolved", state.resolved_at.isoformat() if state.resolved_at else None),
        ("decided by", state.decided_by),
        ("reason", state.reason),
        ("delivered to", ", ".join(f"{d.channel}:{d.target}" for d in state.deliveries)),
        ("version", state.version),
        ("web", state.web_url),
    ]


def print_event(as_json: bool, sequence: int, event: Event) -> None:
    if as_json:
        click.echo(encoder.encode({"seq": sequence, "event": event}))
        return
    click.echo(
        f"{sequence:>8}  {event.occurred_at.isoformat()}  {event.event_type:<10} "
        f"{event.approval_id} v{event.version}  {_event_line(event)}"
    )


def _event_line(event: Event) -> str:
    fields = msgspec.structs.asdict(event)
    shown = {k: fields[k] for k in ("reason", "channel", "target", "title") if fields.get(k)}
    extra = " ".join(f"{k}={v}" for k, v in shown.items())
    return f"{event.actor} {extra}".rstrip()


def _view_rows(view: ApprovalView) -> list[tuple[str, Any]]:
    return [
        ("id", view.id),
        ("workspace", view.workspace_id),
        ("status", view.status),
        ("title", view.title),
        ("summary", view.summary),
        ("risk", view.risk_level),
        ("requested by", view.requested_by),
        ("on behalf of", view.on_behalf_of),
        ("skill", f"{view.skill_name} ({view.skill_execution_id})"),
        ("action", f"{view.action_kind} {view.mode} {view.provider or ''}".rstrip()),
        ("destination", view.destination),
        ("max credits", view.max_credits),
        ("digest", view.digest),
        ("created", view.created_at.isoformat()),
        ("expires", view.expires_at.isoformat()),
        ("resolved", view.resolved_at.isoformat() if view.resolved_at else None),
        ("decided by", view.decided_by),
        ("reason", view.reason),
        ("delivered to", ", ".join(view.channels)),
        ("version", view.version),
        ("web", view.web_url),
    ]


def print_view(as_json: bool, view: ApprovalView, timeline: Sequence[TimelineEntry]) -> None:
    if as_json:
        click.echo(encoder.encode({"ok": True, "approval": view, "timeline": timeline}))
        return
    click.echo(table(_view_rows(view)))
    click.echo("")
    click.echo(
        table(
            [
                (f"v{e.version} {e.type}", f"{e.occurred_at.isoformat()}  {e.actor}")
                for e in timeline
            ]
        )
    )


def print_page(as_json: bool, page: ListReply) -> None:
    if as_json:
        click.echo(encoder.encode(page))
        return
    header = ("CREATED", "STATUS", "RISK", "ID", "TITLE")
    rows = [
        (v.created_at.strftime("%Y-%m-%d %H:%M:%S"), v.status, v.risk_level, str(v.id), v.title)
        for v in page.items
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        )
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")


def print_wait(as_json: bool, reply: WaitReply) -> None:
    if as_json:
        click.echo(encoder.encode(reply))
        return
    view = reply.approval
    state = "still pending (timed out)" if reply.timed_out else view.status
    click.echo(f"{view.id}  {state}  {view.decided_by or ''}  {view.reason or ''}".rstrip())
