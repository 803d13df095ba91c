"""The pure parts of the benchmark harness (bench/run.py, bench/flame.py); nothing here is timed as pass/fail."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from bench import flame
from bench.run import (
    GOALS,
    SECTION_KEYS,
    SECTIONS,
    assemble,
    bounded,
    cluster_timing,
    evaluate_goals,
    latency_summary,
    percentile,
    render_markdown,
    rss_feed,
    scaling_table,
)

ROOT = Path(__file__).resolve().parents[2]


def test_percentile_when_nearest_rank_then_smallest_value_covering_q() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 20) == 1.0
    assert percentile(values, 21) == 2.0
    assert percentile(values, 99) == 5.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 0) == 1.0
    assert percentile(range(1, 101), 99) == 99


def test_percentile_when_empty_or_out_of_range_then_none_or_error() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary_when_all_received_then_exact_percentiles_in_ms() -> None:
    sent = {f"s{i}": 100.0 + i for i in range(100)}
    received = {sid: at + (i + 1) / 1000.0 for i, (sid, at) in enumerate(sent.items())}  # 1..100 ms
    summary = latency_summary(sent, received, until=1000.0)
    assert summary["count"] == 100
    assert summary["missing"] == 0
    assert summary["p50"] == pytest.approx(50.0)
    assert summary["p99"] == pytest.approx(99.0)
    assert summary["max"] == pytest.approx(100.0)
    assert summary["p50_lower_bound"] is False
    assert summary["p99_lower_bound"] is False


def test_latency_summary_when_decisions_missing_then_lower_bounds_flagged() -> None:
    sent = {"a": 10.0, "b": 10.0, "c": 10.0, "d": 10.0}
    received = {"a": 10.002, "b": 10.004, "stranger": 11.0}
    summary = latency_summary(sent, received, until=12.0)  # c and d waited 2 s and more
    assert summary["count"] == 2
    assert summary["missing"] == 2
    assert summary["p50"] == pytest.approx(4.0)
    assert summary["p50_lower_bound"] is False
    assert summary["p99"] == pytest.approx(2000.0)
    assert summary["p99_lower_bound"] is True
    without = latency_summary(sent, received)
    assert without["missing"] == 2
    assert without["p99"] == pytest.approx(4.0)
    assert "p99_lower_bound" not in without


def test_latency_summary_when_since_given_then_only_later_signals() -> None:
    sent = {"early": 1.0, "late": 5.0}
    received = {"early": 1.5, "late": 5.01}
    summary = latency_summary(sent, received, since=2.0)
    assert summary["count"] == 1
    assert summary["p50"] == pytest.approx(10.0)


def test_evaluate_goals_when_measured_then_ratio_to_goal_and_met() -> None:
    rows = {
        r["name"]: r
        for r in evaluate_goals(
            {
                "replay_events_per_s": 50_000,
                "parse_only_events_per_s": 1_000_000,
                "light_latency_ms_p50": 8.0,
                "latency_ms_p99": 150.0,
                "latency_ms_p99_is_lower_bound": True,
                "cluster_recompute_ms_500": 1.0,
            }
        )
    }
    assert len(rows) == len(GOALS)
    assert rows["replay"]["measured"] == pytest.approx(0.05)
    assert rows["replay"]["ratio_to_goal"] == pytest.approx(0.25)
    assert rows["replay"]["met"] is False
    assert rows["latency p50, light load"]["met"] is True
    assert rows["latency p50, light load"]["ratio_to_goal"] == pytest.approx(0.8)
    assert rows["latency p99, 1,000 signals/s"]["met"] is False
    assert "lower bound" in rows["latency p99, 1,000 signals/s"]["detail"]
    assert rows["latency p99, light load"]["met"] is None
    assert rows["cluster recompute"]["met"] is True
    assert rows["pipeline"]["met"] is None
    assert rows["worker RSS"]["measured"] is None


def test_render_markdown_when_results_then_goal_table_and_context() -> None:
    results = assemble(
        {
            "clusters": {"metrics": {"cluster_recompute_ms_500": 0.7}, "started": "t0", "seconds": 1.0},
            "rss": {"metrics": {"worker_rss_mib_500x1000": 2048.0}, "started": "t1", "seconds": 9.0},
        },
        None,
        {"timestamp": "2024-01-02T00:00:00+0000", "machine": {"cpus": 2}, "batch_window_ms": 5.0},
    )
    text = render_markdown(results)
    lines = text.splitlines()
    assert lines[0].startswith("# riskguard benchmark")
    assert "| goal | unit | target | measured | ratio to target | met? |" in lines
    assert any(line.startswith("| cluster recompute |") and line.endswith("| yes |") for line in lines)
    assert any(line.startswith("| worker RSS |") and line.endswith("| **no** |") for line in lines)
    assert any(line.startswith("| replay |") and line.endswith("| not run |") for line in lines)
    assert "batch window 5.0 ms" in text
    assert orjson.loads(orjson.dumps(results))["goals"] == results["goals"]  # JSON-ready


def test_assemble_when_only_some_sections_then_others_carried_over() -> None:
    previous = assemble(
        {"replay": {"metrics": {"replay_events_per_s": 10, "parse_only_events_per_s": 100}, "started": "old"}},
        None,
        {"timestamp": "old-run"},
    )
    results = assemble({"clusters": {"metrics": {"cluster_recompute_ms_500": 1.5}}}, previous, {"timestamp": "new"})
    assert results["replay_events_per_s"] == 10
    assert results["cluster_recompute_ms_500"] == 1.5
    assert results["sections"]["replay"]["carried_over"] is True
    assert results["sections"]["replay"]["started"] == "old"
    assert "metrics" not in results["sections"]["clusters"]
    assert set(SECTION_KEYS) == {
        "replay",
        "real",
        "scaling",
        "pipeline",
        "latency",
        "client",
        "clusters",
        "rss",
        "audit",
        "backtest",
    }
    assert set(SECTION_KEYS) == set(SECTIONS)


def test_scaling_table_when_rows_then_one_line_each_and_partial_or_skipped_runs_said() -> None:
    row = {"symbols": 500, "accounts": 50, "days": 1, "lines": 201_702, "replayed": 201_702, "load": 1.2}
    row |= {"replay_events_per_s": 40_000, "parse_only_events_per_s": 1_500_000, "ratio": 0.0267}
    row |= {"peak_rss_mib": 90.5, "rss_mib_start": 80.1}
    rows = [
        row,
        {**row, "days": 5, "lines": 1_011_236},
        {"symbols": 500, "accounts": 500, "days": 1, "skipped": "out of time"},
    ]

    table = scaling_table(rows)

    assert len(table) == 2 + len(rows)
    assert table[2].startswith("| 500 × 50 × 1 | 201,702 | 40,000 | 1,500,000 | 0.0267 | 90.5 | 80.1 | 1.2 |")
    assert "(201,702 replayed)" in table[3]
    assert "out of time" in table[4]


def test_cluster_timing_when_small_then_median_over_runs() -> None:
    timing = cluster_timing(symbols=40, window=10, runs=5, method="components")
    assert timing["runs"] == 5
    assert timing["symbols"] == 40
    assert 0.0 <= timing["min_ms"] <= timing["median_ms"] <= timing["p90_ms"]
    linkage = cluster_timing(symbols=40, window=10, runs=3, method="average")
    assert linkage["method"] == "average"
    assert linkage["runs"] == 3


def test_bounded_when_deadline_passed_then_stops() -> None:
    assert list(bounded([b"a", b"b"], time.monotonic() + 60)) == [b"a", b"b"]
    assert list(bounded([b"a", b"b"], time.monotonic() - 1)) == []


def test_rss_feed_when_built_then_state_for_every_account_and_symbol() -> None:
    lines = [orjson.loads(line) for line in rss_feed(symbols=12, accounts=5, timestamps=3, fills_per_account=2)]
    topics = [line["topic"] for line in lines]
    assert topics.count("equity") == 5
    assert topics.count("fills") == 10
    assert topics.count("signals") == 5
    assert topics.count("bars") == 12 * 3
    assert len({line["value"]["fill_id"] for line in lines if line["topic"] == "fills"}) == 10
    bars = [line["value"] for line in lines if line["topic"] == "bars"]
    assert all(b["low"] <= min(b["open"], b["close"]) <= max(b["open"], b["close"]) <= b["high"] for b in bars)


def _line_of(path: Path, text: str, after: str = "") -> int:
    """The line after the first line holding `text` (past the first line holding `after`): inside a function."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    for number, line in enumerate(lines[start:], start=start + 1):
        if text in line:
            return number + 1
    raise AssertionError(f"{text!r} not in {path}")


def test_flame_when_raw_stacks_then_self_inclusive_and_level() -> None:
    app = ROOT / "streams" / "worker" / "partitioned.py"
    stages = ROOT / "streams" / "core" / "levels" / "market" / "stage.py"
    handle = f"handle ({app}:{_line_of(app, 'async def handle(')})"
    process = f"process ({stages}:{_line_of(stages, 'def process(', after='class MarketStage')})"
    loop = "_run_once (/usr/lib/python3.11/asyncio/base_events.py:1900)"
    select = "select (/usr/lib/python3.11/selectors.py:468)"
    raw = [
        f"{loop};{handle};{process};dumps (/x/.venv/lib/python3.11/site-packages/orjson/__init__.py:1) 3",
        f"{loop};{handle} 1",
        f"{loop};send (/x/.venv/lib/python3.11/site-packages/aiokafka/producer/producer.py:10) 2",
        f"{loop};{select} 4",
        "garbage line",
    ]
    profile = flame.aggregate(flame.parse_raw(raw))
    assert profile.total == 6
    assert profile.waiting == 4
    assert profile.by_place["market"] == 3
    assert profile.by_place["runtime"] == 2
    assert profile.places[("market", "MarketStage.process")] == 3
    assert profile.places[("level (unknown: shared shell code)", "(self)")] == 1
    top_self = profile.self_time.most_common(1)[0]
    assert top_self == ("dumps (orjson/__init__.py)", 3)
    assert profile.inclusive["PartitionedAgent.handle (streams/worker/partitioned.py)"] == 4
    text = flame.render(profile, top=5, seconds=1.0)
    assert "busy samples: 6" in text
    assert "market" in text
