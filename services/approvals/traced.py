"""The command service's spans: each command's handling and its store commit, and the relay's
publish of each event (``approvals.services.runtime.tracing`` says when tracing is on).

A command's span is made once its batch is decided and saved, with the times it arrived and was
answered: only then is the approval, and so its trace, known. Its parent is the caller's
``traceparent`` when that is in the approval's trace; otherwise the approval's request span
(``tracing.approval_context``), linked to the caller's span (a person's decision in a browser
starts a trace of its own; the decision still belongs to the approval's). A ``request`` starts
the approval's trace: a child of the caller's span, or, when the request's ``trace_id`` names
another trace, a root span of that trace linked to the caller's.

The relay's publish is a child of the commit that stored the event when this process committed
it (remembered until published), else of the approval's request span, derived from the event's
stored ``trace_id``: a relay that restarted, or another instance's, still continues the trace.
It injects its ``traceparent`` into the message's headers, which JetStream keeps with the
message, so every consumer (and every redelivery) continues from there.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanKind, StatusCode

from approvals.schemas.subjects import MSG_ID_HEADER
from approvals.services.approvals.errors import ApprovalError
from approvals.services.runtime import tracing

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from eventsourcing.persistence import Notification
    from opentelemetry.trace import Span, SpanContext

    from approvals.schemas.commands import Command
    from approvals.services.approvals.application import Result

SCOPE = "approvals.commands"
COMMAND_TEMPLATE = "approvals.cmd.{workspace}.{verb}"
MAX_REMEMBERED = 10_000

# approval id -> (its version after the commit, the commit span): until the relay publishes it.
committed: dict[UUID, tuple[int, SpanContext]] = {}


class _Traced(msgspec.Struct):
    trace_id: str | None = None


_traced = msgspec.json.Decoder(_Traced)
_ids = RandomIdGenerator()


def arrived(verb: str, cmd: Command, headers: Mapping[str, str] | None) -> Command:
    """A ``request`` without a ``trace_id`` records its trace's: the caller's, or a new one."""
    if verb != "request" or getattr(cmd, "trace_id", "") is not None:
        return cmd
    trace_int = tracing.trace_id_of(tracing.extract(headers)) or _ids.generate_trace_id()
    return msgspec.structs.replace(cmd, trace_id=f"{trace_int:032x}")


def commands_handled(
    handled: Sequence[tuple[str, Command, str, float, Mapping[str, str] | None]],
    results: Sequence[Result | ApprovalError],
    saved: tuple[int, int] | None,
    done: float,
) -> None:
    """One span per command (workspace, command, verb, arrival as ``perf_counter``, headers),
    with a child for the commit (``saved``: its start and end, ns) when the batch stored events."""
    now_ns, perf = time.time_ns(), time.perf_counter()
    done_ns = now_ns - int((perf - done) * 1e9)
    for (workspace_id, cmd, verb, arrival, headers), result in zip(handled, results, strict=True):
        start_ns = now_ns - int((perf - arrival) * 1e9)
        span = _command_span(workspace_id, cmd, verb, headers, result, start_ns)
        if isinstance(result, ApprovalError):
            span.set_status(StatusCode.ERROR, result.code)
            span.set_attribute("approvals.error", result.code)
        elif saved is not None and not result.replayed:
            commit = tracing.start_span(
                "commit", SCOPE, context=trace.set_span_in_context(span),
                attributes={"approvals.batch_size": len(handled)}, start_time=saved[0],
            )  # fmt: skip
            commit.end(saved[1])
            if result.approval is not None:
                remember(result.approval.id, result.approval.version, commit.get_span_context())
        span.end(done_ns)


def _command_span(
    workspace_id: str, cmd: Command, verb: str, headers: Mapping[str, str] | None,
    result: Result | ApprovalError, start_ns: int,
) -> Span:  # fmt: skip
    caller = tracing.extract(headers)
    approval = None if isinstance(result, ApprovalError) else result.approval
    attributes = tracing.messaging(
        "process", f"approvals.cmd.{workspace_id}.{verb}", COMMAND_TEMPLATE,
        **{"approvals.verb": verb, "approvals.workspace_id": workspace_id},
    )  # fmt: skip
    if not isinstance(result, ApprovalError):
        attributes["approvals.outcome"] = result.outcome
    name = f"process {COMMAND_TEMPLATE.replace('{verb}', verb)}"
    options: dict[str, Any] = {
        "kind": SpanKind.CONSUMER, "attributes": attributes, "start_time": start_ns
    }  # fmt: skip
    if approval is None:
        return tracing.start_span(name, SCOPE, context=caller or Context(), **options)
    attributes["approvals.approval_id"] = str(approval.id)
    attributes["approvals.trace_id"] = approval.request.trace_id or ""
    trace_int = tracing.trace_of(approval.request.trace_id)
    same_trace = caller is not None and tracing.trace_id_of(caller) == trace_int
    links = [] if caller is None or same_trace else [Link(_span_context(caller))]
    starts = verb == "request" and not result.replayed  # type: ignore[union-attr]
    if starts:
        return tracing.start_span(
            name, SCOPE, context=caller if same_trace else Context(), links=links,
            trace_id=None if same_trace else trace_int, span_id=tracing.anchor(approval.id),
            **options,
        )  # fmt: skip
    parent = caller if same_trace else tracing.approval_context(approval.request.trace_id,
                                                                 approval.id)  # fmt: skip
    return tracing.start_span(name, SCOPE, context=parent or caller or Context(), links=links,
                              **options)  # fmt: skip


def _span_context(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


def remember(approval_id: UUID, version: int, commit: SpanContext) -> None:
    committed.pop(approval_id, None)
    committed[approval_id] = (version, commit)
    while len(committed) > MAX_REMEMBERED:
        committed.pop(next(iter(committed)))


def publishing(notification: Notification, subject: str, headers: dict[str, str]) -> Span | None:
    """The relay's span for publishing one event (its ``traceparent`` added to ``headers``), or
    None for an event outside any trace (a workspace's, or one stored with tracing off)."""
    approval_id = UUID(str(notification.originator_id))
    version = notification.originator_version
    known = committed.get(approval_id)
    if known is not None and known[0] >= version:
        if known[0] == version:
            del committed[approval_id]
        parent: Context | None = trace.set_span_in_context(NonRecordingSpan(known[1]))
    else:
        parent = tracing.approval_context(_traced.decode(notification.state).trace_id,
                                          approval_id)  # fmt: skip
    if parent is None:
        return None
    attributes = tracing.messaging(
        "send", subject, tracing.EVENT_TEMPLATE, **{"messaging.message.id": headers[MSG_ID_HEADER]}
    )
    span = tracing.start_span(f"send {tracing.EVENT_TEMPLATE}", "approvals.relay", context=parent,
                              kind=SpanKind.PRODUCER, attributes=attributes)  # fmt: skip
    tracing.inject(headers, trace.set_span_in_context(span))
    return span
