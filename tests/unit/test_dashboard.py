"""The Grafana dashboard and the alerting rules query only metrics the processes really export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import app.ops.metrics  # noqa: F401 (registers every metric)

DOCS = Path(__file__).resolve().parents[2] / "docs"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "and", "or", "unless", "group_left", "group_right", "bool"}


def exported() -> set[str]:
    """Series names the app's metrics export (a family's samples may not exist before first use)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, keywords,
    label names (inside {} or by/without/on (...)), strings or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    found = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("(") or word in PROMQL_WORDS:
            continue  # a function or an aggregation
        found.add(word)
    return found


def dashboard_exprs() -> list[str]:
    dash = json.loads((DOCS / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dash["panels"] for target in panel.get("targets", [])]


def alert_exprs() -> list[str]:
    text = (DOCS / "prometheus-alerts.yml").read_text()
    return [line.split("expr:", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("expr:")]


def test_the_extraction_finds_metrics_and_nothing_else() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, task) (rate(task_seconds_bucket{task="x"}[5m]))) > 1'
    assert metric_names(expr) == {"task_seconds_bucket"}
    expr = "max(queue_depth{queue=~'a'}) > 0 and on() sum(rate(seq_allocated_total[2m])) == 0"
    assert metric_names(expr) == {"queue_depth", "seq_allocated_total"}
    assert "no_such_metric_total" not in exported()


def test_every_dashboard_query_reads_exported_metrics() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    used = set().union(*(metric_names(e) for e in exprs))
    assert used - exported() == set(), "the dashboard queries metrics nobody exports"
    # and it shows every family at least once
    families = {name.removesuffix("_total").removesuffix("_bucket") for name in used}
    assert {"msg_accepted", "queue_depth", "task_seconds", "dead_letters", "gateway_connections"} <= families


def test_every_alert_reads_exported_metrics() -> None:
    exprs = alert_exprs()
    assert len(exprs) >= 5
    assert set().union(*(metric_names(e) for e in exprs)) - exported() == set()
