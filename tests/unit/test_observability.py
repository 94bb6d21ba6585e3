"""Observability without servers: the Grafana dashboard names only metrics the service exports
(read from ``ops``, the module that defines them all), the docs list every metric with its
labels, and the rules by which a trace is chosen."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from approvals.schemas.codec import command_decoders
from approvals.services.approvals import traced
from approvals.services.runtime import ops, tracing

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "approvals-dashboard.json"
DOCS = ROOT / "docs" / "observability.md"

KEYWORDS = frozenset({"by", "without", "and", "or", "unless", "on", "ignoring", "group_left",
                      "group_right", "bool", "offset", "inf", "nan"})  # fmt: skip
GROUPING = re.compile(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)")


def expressions(node: Any) -> list[str]:
    """Every PromQL ``expr`` of the dashboard, wherever it is nested."""
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in expressions(value)]
    if isinstance(node, list):
        return [e for value in node for e in expressions(value)]
    return []


def metric_names(expr: str) -> set[str]:
    """The series an expression reads: identifiers that are neither functions, keywords, label
    names (matchers, grouping) nor inside a range or a string."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = GROUPING.sub("", text)
    names = re.findall(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", text)
    return {n for n in names if n.lower() not in KEYWORDS}


def test_the_dashboard_reads_only_metrics_the_service_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = expressions(dashboard["panels"])
    assert len(exprs) >= 15
    exported = ops.series()
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        # Check: each expression reads at least one series, and only ones exported.
        assert names, expr
        assert names <= exported.keys(), (expr, names - exported.keys())
        # Check: it groups by labels those series have.
        labels = {label for name in names for label in exported[name]}
        for _, grouped in GROUPING.findall(expr):
            assert {g.strip() for g in grouped.split(",") if g.strip()} <= labels, expr
        used |= names
    # Check: the approval metrics of the issue each have a panel.
    wanted = (
        "approvals_decision_seconds",
        "approvals_pending",
        "approvals_expiries",
        "approvals_deliveries",
        "approvals_redemptions",
        "approvals_credits_used",
    )
    for family in wanted:
        assert any(name.startswith(family) for name in used), family


def test_the_parser_finds_the_series_and_not_the_labels() -> None:
    expr = (
        "histogram_quantile(0.9, sum by (le, workspace) (rate(approvals_decision_seconds_bucket"
        '{workspace=~"$workspace"}[$__rate_interval]))) / on (workspace) approvals_pending'
    )
    assert metric_names(expr) == {"approvals_decision_seconds_bucket", "approvals_pending"}


def test_the_docs_list_every_metric_with_its_labels() -> None:
    rows = re.findall(r"^\| `(approvals_[a-z_]+)` \| (\w+) \|([^|]*)\|", DOCS.read_text(), re.M)
    documented = {
        name: (kind, tuple(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows
    }
    assert documented == ops.families()


def test_traces_are_off_unless_an_endpoint_is_configured() -> None:
    assert not tracing.ENABLED  # nothing in the tests' process configured it
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    for off in ({"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}):
        assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", **off})


@pytest.mark.parametrize(
    ("trace_id", "expected"),
    [
        ("4bf92f3577b34da6a3ce929d0e0e4736", 0x4BF92F3577B34DA6A3CE929D0E0E4736),
        ("00000000000000000000000000000000", 0x84E0C0EAFAA95A34C293F278AC52E45C),  # all zero
        ("run-42", 0x92234F8BB000A4AAEC76C3FC1624A580),
        (None, None),
        ("", None),
    ],
)
def test_a_trace_id_names_one_trace(trace_id: str | None, expected: int | None) -> None:
    # A W3C trace id is the trace; anything else is hashed (SHA-256, first 16 bytes).
    assert tracing.trace_of(trace_id) == expected


def test_the_request_span_of_an_approval_is_derived_from_its_id() -> None:
    approval_id = uuid4()
    context = tracing.approval_context("run-42", approval_id)
    found = tracing.trace_id_of(context)
    assert found == tracing.trace_of("run-42")
    assert tracing.anchor(approval_id) == approval_id.int & (2**64 - 1)
    assert tracing.approval_context(None, approval_id) is None


def test_a_request_without_a_trace_id_records_the_callers_trace() -> None:
    body = (
        b'{"requested_by":"service:a","skill_name":"s","skill_execution_id":"e","title":"t",'
        b'"summary":"s","risk_level":"low","action":{"kind":"crm_write","mode":"live"}}'
    )
    cmd = command_decoders["request"].decode(body)
    parent = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    assert traced.arrived("request", cmd, parent).trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    made = traced.arrived("request", cmd, None).trace_id
    assert made is not None
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    given = command_decoders["request"].decode(body[:-1] + b',"trace_id":"run-42"}')
    assert traced.arrived("request", given, parent).trace_id == "run-42"


def test_the_registry_goes_over_otlp_as_the_same_numbers() -> None:
    from opentelemetry.sdk.resources import Resource

    from approvals.services.runtime import metrics_export

    workspace = f"ws-{uuid4().hex[:8]}"  # the registry is the process's: labels of our own
    for seconds in (3, 40, 50, 7200):
        ops.DECISION_SECONDS.labels(workspace, "high", "approved").observe(seconds)
    ops.EXPIRIES.labels(workspace, "low").inc(2)
    ops.PENDING.labels(workspace).set(5)
    data = metrics_export.metrics_data(Resource.create({}), 1)
    [scope] = data.resource_metrics[0].scope_metrics
    metrics = {m.name: m for m in scope.metrics}

    def point(name: str) -> Any:
        [found] = [p for p in metrics[name].data.data_points
                   if p.attributes.get("workspace") == workspace]  # fmt: skip
        return found

    # Check: a histogram keeps its bounds and count; cumulative buckets become per-bucket counts.
    decided = point("approvals_decision_seconds")
    assert decided.attributes == {"workspace": workspace, "risk": "high", "outcome": "approved"}
    assert list(decided.explicit_bounds) == list(ops.DECISION_SECONDS._upper_bounds[:-1])
    assert (decided.count, decided.sum) == (4, 7293)
    bounds = list(decided.explicit_bounds)
    assert decided.bucket_counts[bounds.index(5.0)] == 1  # 3 s: in (1, 5]
    assert decided.bucket_counts[bounds.index(60.0)] == 2  # 40 and 50 s: in (30, 60]
    assert decided.bucket_counts[bounds.index(14400.0)] == 1  # 2 h: in (3600, 14400]
    assert sum(decided.bucket_counts) == 4
    # Check: a counter is a monotonic sum without _total; a gauge is a gauge.
    assert metrics["approvals_expiries"].data.is_monotonic
    assert point("approvals_expiries").value == 2
    assert point("approvals_pending").value == 5
    assert not metrics_export.wanted({})
    assert metrics_export.wanted({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/m"})
    assert not metrics_export.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                      "OTEL_METRICS_EXPORTER": "none"})  # fmt: skip
