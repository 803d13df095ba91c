"""Prometheus metrics (streams.metrics): each series moves when it should and only then (SPEC §9)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP
from faust.types.tuples import Message
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from schemas.config import Config, load_config
from schemas.outputs import Decision
from streams.core.engine import Engine
from streams.core.items import Item, Output, item_for
from streams.gen import GenParams, generate
from streams.metrics import Metrics, faust_lags, install_faust_sensor
from streams.tape import decode_line
from streams.testing import TapeBuilder, TapeResult

T0 = "2024-01-15T10:00:00Z"
KEY = b"metrics-test-key"
Sample = tuple[str, frozenset[tuple[str, str]]]
MAP = {"riskguard_events_total{kind=cluster_map}": 1.0}  # a tape with bars publishes one cluster map


def samples(metrics: Metrics) -> dict[Sample, float]:
    """Every sample of `render()`, parsed back, without the `_created` timestamps."""
    body, _ = metrics.render()
    found: dict[Sample, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if not s.name.endswith("_created"):
                found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, frozenset(labels.items()))]


def changes(before: dict[Sample, float], after: dict[Sample, float]) -> dict[str, float]:
    """The samples that moved, as `name{k=v,...}` -> new value (NaN == NaN counts as unchanged)."""
    moved: dict[str, float] = {}
    for key, new in after.items():
        old = before.get(key)
        if old is None or not (old == new or (math.isnan(old) and math.isnan(new))):
            name, labels = key
            moved[name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels)) + "}"] = new
    return moved


def feed(metrics: Metrics, result: TapeResult) -> None:
    """What the worker does: observe every output, count what each level ignored or kept unpublished."""
    for output in result.outputs:
        metrics.observe(output)
    for stage in result.engine.stages:
        metrics.stage_counts(stage.name, stage.stats)


def run(tape: TapeBuilder, config: Config | dict[str, Any], metrics: Metrics) -> dict[str, float]:
    before = samples(metrics)
    feed(metrics, tape.run(config, control_key=KEY))
    return changes(before, samples(metrics))


def _book_with_aapl(qty: float, price: float) -> TapeBuilder:
    tape = TapeBuilder().equity("acct", T0, 100_000).flat_bar("AAPL", T0, price)
    return tape.fill("acct", "AAPL", "BUY", qty, price, "2024-01-15T10:01:00Z")


@pytest.fixture
def seed001(seed001_path: Path) -> Config:
    return load_config(seed001_path)


def test_allow_decision_when_observed_then_only_allowed_and_decision_counters_move(seed001: Config) -> None:
    tape = _book_with_aapl(90, 150.0).signal(
        "acct", "AAPL", "2024-01-15T10:30:00Z", price=151.0, target_notional=15_000
    )

    moved = run(tape, seed001, Metrics())

    assert moved == {
        **MAP,
        "riskguard_orders_allowed_total{}": 1.0,
        "riskguard_decisions_total{action=ALLOW,origin=signal}": 1.0,
    }


def test_clip_decision_when_observed_then_clipped_by_layer_and_clip_ratio_is_qty_over_requested(
    seed001: Config,
) -> None:
    tape = TapeBuilder().equity("acct", T0, 100_000)
    tape.signal("acct", "NVDA", "2024-01-15T10:30:00Z", price=150.0, target_notional=25_000)
    metrics = Metrics()
    before = samples(metrics)

    result = tape.run(seed001)
    feed(metrics, result)

    (decision,) = result.decisions
    ratio = decision.qty / decision.requested_qty
    assert decision.action.value == "CLIP" and 0 < ratio < 1
    assert changes(before, samples(metrics)) == {
        "riskguard_orders_clipped_total{layer=per_trade}": 1.0,
        "riskguard_decisions_total{action=CLIP,origin=signal}": 1.0,
        "riskguard_avg_clip_ratio{}": pytest.approx(ratio),
        "riskguard_clip_ratio_count{}": 1.0,
        "riskguard_clip_ratio_sum{}": pytest.approx(ratio),
    }


def test_avg_clip_ratio_when_no_clip_yet_then_nan_and_after_two_clips_their_mean(seed001: Config) -> None:
    metrics = Metrics()
    assert math.isnan(value(metrics, "riskguard_avg_clip_ratio"))
    ratios = []
    for target in (25_000, 30_000):
        tape = TapeBuilder().equity("acct", T0, 100_000)
        tape.signal("acct", "NVDA", "2024-01-15T10:30:00Z", price=150.0, target_notional=target)
        (decision,) = tape.run(seed001).decisions
        metrics.observe(Output("decisions", "acct", decision))
        ratios.append(decision.qty / decision.requested_qty)

    assert ratios[0] != ratios[1]
    assert value(metrics, "riskguard_avg_clip_ratio") == pytest.approx(sum(ratios) / 2)


def test_deny_decision_when_dust_then_only_denied_for_its_layer_moves(seed001: Config) -> None:
    tape = TapeBuilder().equity("acct", T0, 100_000)
    tape.signal("acct", "AAPL", "2024-01-15T10:30:00Z", price=150.0, target_notional=100)

    moved = run(tape, seed001, Metrics())

    assert moved == {
        "riskguard_orders_denied_total{layer=per_trade}": 1.0,
        "riskguard_decisions_total{action=DENY,origin=signal}": 1.0,
    }


def test_signal_when_inside_band_then_noop_band_counted_once(seed001: Config) -> None:
    tape = _book_with_aapl(100, 150.0).signal(
        "acct", "AAPL", "2024-01-15T10:30:00Z", price=150.5, target_notional=15_000
    )

    moved = run(tape, seed001, Metrics())

    assert moved == {
        **MAP,
        "riskguard_noop_band_total{}": 1.0,
        "riskguard_decisions_total{action=NOOP,origin=signal}": 1.0,
    }


def test_signal_when_unchanged_then_no_band_or_cadence_noop(seed001: Config) -> None:
    tape = _book_with_aapl(90, 150.0)
    tape.signal("acct", "AAPL", "2024-01-15T10:30:00Z", price=151.0, target_notional=15_000)
    tape.signal("acct", "AAPL", "2024-01-15T10:31:00Z", price=151.0, target_notional=15_500)

    moved = run(tape, seed001, Metrics())

    assert moved == {
        **MAP,
        "riskguard_orders_allowed_total{}": 1.0,
        "riskguard_decisions_total{action=ALLOW,origin=signal}": 1.0,
        "riskguard_decisions_total{action=NOOP,origin=signal}": 1.0,
    }


def test_cadence_tick_when_not_due_and_outside_band_then_noop_cadence_without_a_decision(seed001: Config) -> None:
    tape = _book_with_aapl(100, 150.0)
    tape.signal("acct", "AAPL", "2024-01-15T10:30:00Z", price=150.0, target_notional=15_000)
    tape.flat_bar("AAPL", "2024-01-15T10:40:00Z", 130.0)  # outside the band, cadence (30m) not due

    moved = run(tape, seed001, Metrics())

    assert moved == {
        **MAP,
        "riskguard_noop_band_total{}": 1.0,  # the signal itself, inside the band at 150
        "riskguard_decisions_total{action=NOOP,origin=signal}": 1.0,
        "riskguard_noop_cadence_total{}": 1.0,
    }


def test_cadence_tick_when_due_and_inside_band_then_noop_band_though_nothing_is_published(seed001: Config) -> None:
    tape = _book_with_aapl(100, 150.0)
    tape.signal("acct", "AAPL", "2024-01-15T10:30:00Z", price=150.0, target_notional=15_000)
    tape.flat_bar("AAPL", "2024-01-15T11:05:00Z", 151.0)  # due, still inside the band

    metrics = Metrics()
    result = tape.run(seed001)
    feed(metrics, result)

    assert len(result.decisions) == 1  # only the signal's NOOP
    assert value(metrics, "riskguard_noop_band_total") == 2.0
    assert value(metrics, "riskguard_noop_cadence_total") == 0.0


def test_generated_session_when_fed_per_event_then_counters_equal_the_engines_own_counts(seed001: Config) -> None:
    metrics = Metrics()
    engine = Engine(seed001)
    decisions: list[Decision] = []

    def run_items(items: list[Item], first: int) -> None:
        # The worker's per-event wiring: observe each output, count each stage's stats delta.
        for stage in engine.stages[first:]:
            forwarded: list[Item] = []
            for item in items:
                before = Counter(stage.stats)
                outputs, more = stage.process(item)
                metrics.stage_counts(stage.name, stage.stats - before)
                for output in outputs:
                    metrics.observe(output)
                    if isinstance(output.value, Decision):
                        decisions.append(output.value)
                forwarded += more
            items = forwarded

    for line in generate(GenParams(symbols=12, accounts=3, days=1, seed=5), seed001):
        topic, _, event = decode_line(line)
        run_items([item_for(topic, event)], 0)
    outputs, items = engine.market.finish()
    for output in outputs:
        metrics.observe(output)
    run_items(items, 1)

    stats = engine.stats
    assert stats["noop_cadence"] > 0 and stats["noop_band"] > stats["noop_within_band"] > 0
    assert value(metrics, "riskguard_noop_cadence_total") == stats["noop_cadence"]
    assert value(metrics, "riskguard_noop_band_total") == stats["noop_band"]
    assert value(metrics, "riskguard_orders_allowed_total") == stats["orders_allowed"]
    for layer in ("account", "cluster", "per_symbol", "per_trade", "group", "portfolio"):
        assert value(metrics, "riskguard_orders_clipped_total", layer=layer) == stats[f"orders_clipped_{layer}"]
        assert value(metrics, "riskguard_orders_denied_total", layer=layer) == stats[f"orders_denied_{layer}"]
    clips = [d.qty / d.requested_qty for d in decisions if d.action.value == "CLIP"]
    assert value(metrics, "riskguard_avg_clip_ratio") == pytest.approx(sum(clips) / len(clips))
    by_action = Counter(d.action.value for d in decisions)
    for action, count in by_action.items():
        total = sum(v for (n, labels), v in samples(metrics).items() if ("action", action) in labels)
        assert total == count


def test_operator_halt_when_observed_then_halts_by_state_and_control_event_counted() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000)
    tape.control("HALT", "a", "2024-01-15T10:01:00Z", "n1", "2024-01-15T11:00:00Z", KEY)

    moved = run(tape, {}, Metrics())

    assert moved == {
        "riskguard_halts_total{state=HALTED}": 1.0,
        "riskguard_events_total{kind=control_applied}": 1.0,
    }


def test_refused_control_when_expired_then_dead_letter_for_control_and_security_event() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000).flat_bar("X", "2024-01-15T12:00:00Z", 10.0)
    tape.control("HALT", "a", "2024-01-15T10:30:00Z", "n1", "2024-01-15T11:00:00Z", KEY)

    moved = run(tape, {}, Metrics())

    assert moved == {
        **MAP,
        "riskguard_dead_letters_total{topic=control}": 1.0,
        "riskguard_events_total{kind=security}": 1.0,
    }


def test_bad_tape_line_when_replayed_then_dead_letter_labelled_tape() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000).raw("{not json")

    moved = run(tape, {}, Metrics())

    assert moved == {"riskguard_dead_letters_total{topic=tape}": 1.0}


def test_repeated_fill_id_when_replayed_then_duplicate_counted_at_symbol_level(seed001: Config) -> None:
    tape = TapeBuilder().equity("acct", T0, 100_000).flat_bar("AAPL", T0, 150.0)
    tape.fill("acct", "AAPL", "BUY", 10, 150.0, "2024-01-15T10:01:00Z", fill_id="f1")
    tape.fill("acct", "AAPL", "BUY", 10, 150.0, "2024-01-15T10:02:00Z", fill_id="f1")

    moved = run(tape, seed001, Metrics())

    assert moved == {**MAP, "riskguard_duplicates_total{level=symbol}": 1.0}


def test_shell_observations_when_reported_then_only_their_series_move() -> None:
    metrics = Metrics()
    before = samples(metrics)

    metrics.dead_letter("signals")
    metrics.duplicate("portfolio")
    metrics.duplicate("portfolio")

    assert changes(before, samples(metrics)) == {
        "riskguard_dead_letters_total{topic=signals}": 1.0,
        "riskguard_duplicates_total{level=portfolio}": 2.0,
    }


def test_decision_latency_when_observed_then_lands_in_its_millisecond_bucket() -> None:
    metrics = Metrics()

    metrics.latency(0.0007)
    metrics.latency(3.0)

    name = "riskguard_decision_latency_seconds_bucket"
    assert value(metrics, name, le="0.0005") == 0.0
    assert value(metrics, name, le="0.001") == 1.0
    assert value(metrics, name, le="2.5") == 1.0
    assert value(metrics, name, le="5.0") == 2.0
    assert value(metrics, "riskguard_decision_latency_seconds_count") == 2.0


def test_consumer_lag_when_replaced_then_revoked_partitions_disappear() -> None:
    metrics = Metrics()
    metrics.set_lag("risk.sequenced", 0, 7)
    metrics.set_lag("risk.sequenced", 1, 3)

    metrics.replace_lags([("risk.sequenced", 1, 0)])

    lag = {k: v for k, v in samples(metrics).items() if k[0] == "riskguard_consumer_lag"}
    assert lag == {("riskguard_consumer_lag", frozenset({("topic", "risk.sequenced"), ("partition", "1")})): 0.0}


def test_faust_lags_when_partitions_read_then_high_water_minus_next_offset_and_unread_skipped() -> None:
    read_tp, unread_tp = TP("risk.level1", 0), TP("risk.level1", 1)
    consumer = SimpleNamespace(assignment=lambda: {read_tp, unread_tp}, highwater=lambda tp: 120)
    app = SimpleNamespace(consumer=consumer, monitor=SimpleNamespace(tp_read_offsets={read_tp: 99}))

    assert faust_lags(app) == [("risk.level1", 0, 20)]


def test_render_when_called_then_prometheus_text_content_type_and_own_registry_only() -> None:
    first, second = Metrics(), Metrics()  # two objects in one process do not collide
    first.duplicate("market")

    body, content_type = first.render()

    assert content_type == CONTENT_TYPE_LATEST and content_type.startswith("text/plain")
    assert b'riskguard_duplicates_total{level="market"} 1.0' in body
    assert value(second, "riskguard_duplicates_total", level="market") == 0.0


def test_faust_sensor_when_installed_then_its_metrics_render_from_our_registry_without_its_own_page() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    app = faust.App("metrics-test", broker="kafka://127.0.0.1:1", store="memory://")

    monitor = install_faust_sensor(app, registry)
    app.monitor.on_message_in(
        TP("risk.sequenced", 2), 41, Message("risk.sequenced", 2, 41, 0.0, 0, {}, b"k", b"v", None)
    )

    assert app.monitor is monitor
    assert value(metrics, "faust_messages_received_total") == 1.0
    assert value(metrics, "faust_messages_received_per_topic_total", topic="risk.sequenced") == 1.0
    assert value(metrics, "riskguard_orders_allowed_total") == 0.0
    assert [r.resource.canonical for r in app.web.web_app.router.routes()] == []


def test_faust_sensor_when_installed_after_the_monitor_joined_the_sensors_then_it_replaces_it() -> None:
    app = faust.App("metrics-test-started", broker="kafka://127.0.0.1:1", store="memory://")
    default = app.monitor
    app.sensors.add(default)  # what App.on_init_dependencies does at start

    monitor = install_faust_sensor(app, CollectorRegistry())

    assert monitor in set(app.sensors) and default not in set(app.sensors)


def test_faust_sensor_when_hooks_called_then_same_samples_as_faust_stock_prometheus_monitor() -> None:
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor

    def samples(registry: CollectorRegistry) -> dict[Sample, float]:
        from prometheus_client.exposition import generate_latest

        out: dict[Sample, float] = {}
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            for s in family.samples:
                if not s.name.endswith(("_created", "_bucket", "_sum", "_count")):
                    out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    lean_registry, stock_registry = CollectorRegistry(), CollectorRegistry()
    app = faust.App("metrics-test-lean", broker="kafka://127.0.0.1:1", store="memory://")
    lean = install_faust_sensor(app, lean_registry)
    stock = PrometheusMonitor(metrics=FaustMetrics.create(stock_registry, "faust"))

    class Owner:
        pass

    class Stream:  # what the hooks read of a stream; weakly referenced, as Faust's own monitor does
        shortlabel = "Stream: risk.sequenced"
        task_owner = Owner()

    stream = Stream()
    table = SimpleNamespace(name="level-symbol")
    for monitor in (lean, stock):
        for offset, topic in enumerate(["risk.sequenced", "risk.sequenced", "market.bars"]):
            tp = TP(topic, offset % 2)
            message = Message(topic, tp.partition, offset, 0.0, 0, {}, b"k", b"v", None)
            monitor.on_message_in(tp, offset, message)
            state = monitor.on_stream_event_in(tp, offset, stream, SimpleNamespace())
            monitor.on_stream_event_out(tp, offset, stream, SimpleNamespace(), state)
            monitor.on_message_out(tp, offset, message)
            monitor.on_table_set(table, "0/a", b"v")
            monitor.on_table_get(table, "0/a")
            monitor.on_table_del(table, "0/a")
            monitor.on_send_initiated(None, "risk.decisions", None, 1, 1)

    lean_samples = samples(lean_registry)
    assert lean_samples == samples(stock_registry)
    assert lean_samples[("faust_messages_received_per_topic_total", frozenset({("topic", "risk.sequenced")}))] == 2.0
    assert lean.messages_received_total == stock.messages_received_total == 3


def test_faust_sensor_when_a_rebalance_cleared_the_partition_series_then_they_come_back() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    app = faust.App("metrics-test-rebalance", broker="kafka://127.0.0.1:1", store="memory://")
    monitor = install_faust_sensor(app, registry)
    tp = TP("risk.sequenced", 1)

    monitor.on_message_in(tp, 5, Message("risk.sequenced", 1, 5, 0.0, 0, {}, b"k", b"v", None))
    state = monitor.on_rebalance_start(app)  # Faust drops the per-topic and per-partition series here
    monitor.on_rebalance_end(app, state)
    monitor.on_message_in(tp, 6, Message("risk.sequenced", 1, 6, 0.0, 0, {}, b"k", b"v", None))

    assert value(metrics, "faust_messages_received_per_topic_total", topic="risk.sequenced") == 1.0
    assert value(metrics, "faust_messages_received_per_topics_partition", topic="risk.sequenced", partition="1") == 6.0
