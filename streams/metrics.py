"""Prometheus metrics of the worker (SPEC §9; seed 001 §Telemetry "Key Metrics"): one typed object, one registry.

`Metrics` owns a `CollectorRegistry`; nothing here registers in prometheus_client's global `REGISTRY`, so two
apps (or two tests) in one process never collide. Faust's own sensor (`PrometheusMonitor`) can write into the
same registry (`install_faust_sensor`), and the worker serves that one registry on its `/metrics` page.

What the counters count, and where it comes from:

- Published outputs (`observe`): decisions by action, origin and deciding layer, the clip ratio of CLIPs,
  NOOP decisions inside the band, halts by new state, risk events by kind, rebalance runs, dead letters the
  levels emit (refused controls).
- What never becomes an output (`stage_counts`, fed the change of a level stage's `stats` around one
  `process` call): a cadence tick that is not due although the position is outside its band
  (`noop_cadence`), a cadence evaluation that ends inside the band (`noop_band`; the stage publishes no
  decision for it), duplicate and out-of-order events a level ignored.
- The shell's own observations: dead letters the sequencer writes (`dead_letter`), offsets redelivered
  after a crash or rebalance (`duplicate`), consumer lag (`set_lag`, `faust_lags`), decision latency
  (`latency`).
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.exposition import generate_latest

from schemas.outputs import Action, DeadLetter, Decision, Halt, Layer, Origin, RebalanceRun, RiskEvent, TradingState
from streams.core.items import Output

__all__ = ["LATENCY_BUCKETS", "LEVELS", "PREFIX", "Metrics", "faust_lags", "install_faust_sensor"]

PREFIX = "riskguard"
LEVELS = ("market", "account", "symbol", "portfolio")
"""The guard levels, one agent each; a label of the duplicate and out-of-order counters."""

INPUTS = ("bars", "fills", "signals", "equity", "control")
"""Logical input topics: the usual `topic` labels of the dead-letter counter."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds, 0.5 ms to 5 s: an in-process decision takes well under a millisecond, a Kafka hop a few ms."""

# The band NOOP of a signal is published *and* counted by the stage as `noop_band`; `_count` adds
# `noop_within_band` for every published one, so the difference is the band NOOPs that stayed unpublished.
_BAND_REASON = "within_band"


class Metrics:
    """Every riskguard metric, registered in one registry (created here unless one is passed)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = PREFIX
        self.decisions = Counter(
            f"{p}_decisions", "Published decisions by action and origin", ["action", "origin"], registry=r
        )
        self.orders_allowed = Counter(f"{p}_orders_allowed", "Orders that proceed without clipping", registry=r)
        self.orders_clipped = Counter(f"{p}_orders_clipped", "Orders clipped, by deciding layer", ["layer"], registry=r)
        self.orders_denied = Counter(f"{p}_orders_denied", "Orders denied, by deciding layer", ["layer"], registry=r)
        self.noop_band = Counter(f"{p}_noop_band", "No order: the position is inside its band", registry=r)
        self.noop_cadence = Counter(
            f"{p}_noop_cadence", "No order: outside the band but the rebalance cadence is not due", registry=r
        )
        self.avg_clip_ratio = Gauge(
            f"{p}_avg_clip_ratio", "Mean approved/requested quantity over CLIP decisions since start", registry=r
        )
        self.clip_ratio = Summary(
            f"{p}_clip_ratio", "Approved/requested quantity of CLIP decisions (rate sum/count for a window)", registry=r
        )
        self.dead_letters = Counter(f"{p}_dead_letters", "Messages sent to the dead letter", ["topic"], registry=r)
        self.duplicates = Counter(
            f"{p}_duplicates", "Redelivered or duplicate events skipped, by level", ["level"], registry=r
        )
        self.gaps_filled = Counter(
            f"{p}_gap_records_filled",
            "Messages a level read itself because its stream skipped them (after a rebalance), by level",
            ["level"],
            registry=r,
        )
        self.out_of_order = Counter(f"{p}_out_of_order", "Out-of-order events ignored, by level", ["level"], registry=r)
        self.level_errors = Counter(
            f"{p}_level_errors",
            "Items a level raised on: dead-lettered, the account failed closed (SPEC §8), by level",
            ["level"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            f"{p}_consumer_lag", "Messages behind the high-water mark", ["topic", "partition"], registry=r
        )
        self.decision_latency = Histogram(
            f"{p}_decision_latency_seconds", "Decision latency in seconds", buckets=LATENCY_BUCKETS, registry=r
        )
        self.halts = Counter(f"{p}_halts", "Trading-state changes, by new state", ["state"], registry=r)
        self.events = Counter(f"{p}_events", "Risk events published, by kind", ["kind"], registry=r)
        self.rebalance_runs = Counter(f"{p}_rebalance_runs", "Rebalance runs, by status", ["status"], registry=r)
        self._clip_sum = 0.0
        self._clip_count = 0
        self.avg_clip_ratio.set(math.nan)  # no CLIP yet: no mean, not zero
        self._zero_known_series()

    def _zero_known_series(self) -> None:
        """Create the label sets known in advance, so a series exists (at 0) before its first increment."""
        for action in Action:
            for origin in Origin:
                self.decisions.labels(action=action.value, origin=origin.value)
        for layer in Layer:
            self.orders_clipped.labels(layer=layer.value)
            self.orders_denied.labels(layer=layer.value)
        for level in LEVELS:
            self.duplicates.labels(level=level)
            self.out_of_order.labels(level=level)
            self.level_errors.labels(level=level)
        for topic in INPUTS:
            self.dead_letters.labels(topic=topic)
        for state in TradingState:
            self.halts.labels(state=state.value)
        for status in ("preview", "executed"):
            self.rebalance_runs.labels(status=status)

    def observe(self, output: Output) -> None:
        """Count one published output (decision, halt, event, rebalance run or dead letter)."""
        value = output.value
        if isinstance(value, Decision):
            self._decision(value)
        elif isinstance(value, Halt):
            self.halts.labels(state=value.state.value).inc()
        elif isinstance(value, RiskEvent):
            self.events.labels(kind=value.kind).inc()
        elif isinstance(value, RebalanceRun):
            self.rebalance_runs.labels(status=value.status).inc()
        elif isinstance(value, DeadLetter):
            source = value.source
            self.dead_letter(source.topic or ("tape" if source.line is not None else "?"))

    def _decision(self, decision: Decision) -> None:
        self.decisions.labels(action=decision.action.value, origin=decision.origin.value).inc()
        if decision.action is Action.ALLOW:
            self.orders_allowed.inc()
        elif decision.action is Action.CLIP:
            self.orders_clipped.labels(layer=decision.layer.value).inc()
            if decision.requested_qty > 0:
                ratio = decision.qty / decision.requested_qty
                self.clip_ratio.observe(ratio)
                self._clip_sum += ratio
                self._clip_count += 1
                self.avg_clip_ratio.set(self._clip_sum / self._clip_count)
        elif decision.action is Action.DENY:
            self.orders_denied.labels(layer=decision.layer.value).inc()
        elif decision.reason == _BAND_REASON:
            self.noop_band.inc()

    def stage_counts(self, level: str, delta: Mapping[str, int]) -> None:
        """Count what a level ignored or decided without publishing, from the change of its stage's `stats`."""
        duplicates = delta.get("duplicates", 0)
        if duplicates > 0:
            self.duplicates.labels(level=level).inc(duplicates)
        late = delta.get("out_of_order", 0)
        if late > 0:
            self.out_of_order.labels(level=level).inc(late)
        cadence = delta.get("noop_cadence", 0)
        if cadence > 0:
            self.noop_cadence.inc(cadence)
        unpublished_band = delta.get("noop_band", 0) - delta.get(f"noop_{_BAND_REASON}", 0)
        if unpublished_band > 0:
            self.noop_band.inc(unpublished_band)

    def dead_letter(self, topic: str) -> None:
        """Count a dead letter the shell wrote itself; `topic` is the logical source (e.g. `signals`)."""
        self.dead_letters.labels(topic=topic).inc()

    def level_error(self, level: str) -> None:
        """Count one item a level raised on (contained: dead-lettered, the account failed closed)."""
        self.level_errors.labels(level=level).inc()

    def duplicate(self, level: str) -> None:
        """Count one redelivered event a level skipped (offset at or below its applied offset)."""
        self.duplicates.labels(level=level).inc()

    def gap_filled(self, level: str, count: int) -> None:
        """Count messages a level read past its stream to close a gap after its applied offset."""
        self.gaps_filled.labels(level=level).inc(count)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        """Set the consumer lag of one topic partition."""
        self.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)

    def replace_lags(self, lags: Iterable[tuple[str, int, int]]) -> None:
        """Set the lag of every assigned partition and drop the partitions no longer assigned."""
        self.consumer_lag.clear()
        for topic, partition, lag in lags:
            self.set_lag(topic, partition, lag)

    def latency(self, seconds: float) -> None:
        """Observe one decision latency."""
        self.decision_latency.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The registry in the Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def install_faust_sensor(app: Any, registry: CollectorRegistry, name_prefix: str = "faust") -> Any:
    """Make Faust's `PrometheusMonitor` the app's monitor, writing into `registry`; no `/metrics` page of its own.

    `faust.sensors.prometheus.setup_prometheus_sensors` does the same and also adds an `app.page(pattern)`
    serving the registry; the worker serves `/metrics` itself, so only the monitor is installed here.
    Best called in `build_app`: `App.on_init_dependencies` adds `app.monitor` to the sensors at start; a
    monitor already among the sensors is swapped for the new one.
    """
    from faust.sensors.prometheus import FaustMetrics

    monitor = _lean_monitor_class()(FaustMetrics.create(registry, name_prefix))
    previous = app.monitor
    app.monitor = monitor
    if previous in set(app.sensors):
        app.sensors.remove(previous)
        app.sensors.add(monitor)
    return monitor


def faust_lags(app: Any) -> list[tuple[str, int, int]]:
    """(topic, partition, lag) of the app's assigned partitions it has read from: high-water mark - next offset."""
    consumer = app.consumer
    read: Mapping[Any, int] = app.monitor.tp_read_offsets
    lags: list[tuple[str, int, int]] = []
    for tp in sorted(consumer.assignment()):
        high = consumer.highwater(tp)
        offset = read.get(tp)
        if high is None or offset is None:
            continue  # nothing fetched or read yet: the lag is unknown, not zero
        lags.append((tp.topic, tp.partition, max(int(high) - (offset + 1), 0)))
    return lags


_STREAM_LABEL_JUNK = re.compile(r"[\<\>:\s]+")  # what Faust's monitor replaces by "_" in a stream label


def _stream_series(stream: Any) -> str:
    """The `stream` label Faust's `PrometheusMonitor` gives a stream's events (its own spelling, redone here
    rather than calling its private helper)."""
    name = _STREAM_LABEL_JUNK.sub("_", str(stream.shortlabel).lstrip("Stream:")).strip("_").lower()
    return f"stream.{name}.events"


def _lean_monitor_class() -> Any:
    """Faust's `PrometheusMonitor` with each labelled series looked up once, not at every event.

    Faust calls four sensor hooks per message (in, stream in, stream out, out); the stock monitor asks
    prometheus_client for the labelled child of a metric in most of them (`labels()` takes a lock and
    checks its arguments each time), which cost ~8 % of the worker's CPU. Same metrics, same names
    and values; only the children are cached per label value (a handful of topics, streams and tables).
    """
    from faust.sensors.prometheus import PrometheusMonitor

    class LeanPrometheusMonitor(PrometheusMonitor):
        def __init__(self, metrics: Any, **kwargs: Any) -> None:
            super().__init__(metrics, **kwargs)
            self.faust_metrics = metrics
            self._series_cache: dict[tuple[Any, ...], Any] = {}
            self._stream_labels: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

        def _child(self, metric: Any, **labels: Any) -> Any:
            key = (id(metric), *labels.values())
            child = self._series_cache.get(key)
            if child is None:
                child = self._series_cache[key] = metric.labels(**labels)
            return child

        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            super(PrometheusMonitor, self).on_message_in(tp, offset, message)  # Faust's own `Monitor` bookkeeping
            m = self.faust_metrics
            m.messages_received.inc()
            m.active_messages.inc()
            self._child(m.messages_received_per_topics, topic=tp.topic).inc()
            self._child(m.messages_received_per_topics_partition, topic=tp.topic, partition=tp.partition).set(offset)

        def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> Any:
            state = super(PrometheusMonitor, self).on_stream_event_in(tp, offset, stream, event)
            m = self.faust_metrics
            m.total_events.inc()
            m.total_active_events.inc()
            label = self._stream_labels.get(stream)
            if label is None:
                label = self._stream_labels[stream] = _stream_series(stream)
            self._child(m.total_events_per_stream, stream=label).inc()
            return state

        def on_rebalance_start(self, app: Any) -> Any:
            state = super().on_rebalance_start(app)
            self._series_cache.clear()  # Faust removes the per-topic and per-partition series at a rebalance
            return state

        def on_rebalance_end(self, app: Any, state: Any) -> None:
            super().on_rebalance_end(app, state)
            self._series_cache.clear()

        def _table_op(self, table: Any, operation: str) -> None:
            self._child(self.faust_metrics.table_operations, table=f"table.{table.name}", operation=operation).inc()

        def on_table_get(self, table: Any, key: Any) -> None:
            super(PrometheusMonitor, self).on_table_get(table, key)
            self._table_op(table, self.KEYS_RETRIEVED)

        def on_table_set(self, table: Any, key: Any, value: Any) -> None:
            super(PrometheusMonitor, self).on_table_set(table, key, value)
            self._table_op(table, self.KEYS_UPDATED)

        def on_table_del(self, table: Any, key: Any) -> None:
            super(PrometheusMonitor, self).on_table_del(table, key)
            self._table_op(table, self.KEYS_DELETED)

        def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> Any:
            self._child(self.faust_metrics.topic_messages_sent, topic=f"topic.{topic}").inc()
            return super(PrometheusMonitor, self).on_send_initiated(producer, topic, message, keysize, valsize)

    return LeanPrometheusMonitor
