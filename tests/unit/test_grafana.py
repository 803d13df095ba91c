"""deploy/grafana/riskguard-dashboard.json: valid, and every metric it charts is one the worker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import faust
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streams.metrics import Metrics, install_faust_sensor

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "riskguard-dashboard.json"
METRIC = re.compile(r"\b(?:riskguard|faust)_[a-zA-Z0-9_]+")
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def exported() -> dict[str, str]:
    """Series name -> family name of everything `/metrics` serves: ours and Faust's sensor, one registry."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    install_faust_sensor(faust.App("grafana-test", broker="kafka://127.0.0.1:1", store="memory://"), registry)
    body, _ = metrics.render()
    names: dict[str, str] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name.endswith("_created"):
            continue  # the creation-time gauges prometheus_client writes beside counters
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = family.name
    return names


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p["targets"]]


def test_dashboard_when_loaded_then_grafana_schema_with_a_prometheus_datasource_variable(
    dashboard: dict[str, Any],
) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")


def test_panels_when_listed_then_unique_ids_on_the_grid_and_each_queries_the_datasource_variable(
    dashboard: dict[str, Any],
) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
    for panel in panels(dashboard):
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_panel_queries_when_parsed_then_every_metric_name_is_exported(
    dashboard: dict[str, Any], exported: dict[str, str]
) -> None:
    used = {name for expr in exprs(dashboard) for name in METRIC.findall(expr)}

    assert used, "the dashboard charts no riskguard or faust metric"
    assert sorted(used - exported.keys()) == []


def test_riskguard_families_when_exported_then_each_is_charted_somewhere(
    dashboard: dict[str, Any], exported: dict[str, str]
) -> None:
    charted = {exported[name] for expr in exprs(dashboard) for name in METRIC.findall(expr) if name in exported}
    ours = {family for family in exported.values() if family.startswith("riskguard_")}

    assert sorted(ours - charted) == []


def test_histogram_quantile_when_used_then_over_bucket_series_by_le(dashboard: dict[str, Any]) -> None:
    quantiles = [e for e in exprs(dashboard) if "histogram_quantile" in e]

    assert any("riskguard_decision_latency_seconds_bucket" in e and "0.99" in e for e in quantiles)
    assert any("riskguard_decision_latency_seconds_bucket" in e and "0.5," in e for e in quantiles)
    for expr in quantiles:
        assert "_bucket[" in expr and "by (le)" in expr, expr
