"""The audit's shell: read the sequenced log and the decisions and halts topics of a running deployment.

`audit_once` (`riskguard audit`): every partition of `risk.sequenced` from its first offset to its end
(read_committed, the last stable offset when the audit starts), re-derived with `core.Rederiver`; then the
decisions and halts topics from their beginning to their end, matched by id; derived outputs not yet
published wait up to `grace` seconds for the pipeline to publish them.

`follow` (`riskguard audit --follow`): the same, from the beginning, and then on as records arrive — one
consumer, its own group (offsets committed, so `kafka-consumer-groups` shows its lag), memory bounded by
the level chains' per-account state, the unmatched outputs and the last `remember` settled ids. Every
finding is logged, counted and published as an `audit_mismatch` RiskEvent on the events topic; its
`/metrics` (Prometheus) shows verified and findings counters and the lag per topic.

Clients authenticate as every other riskguard client does (`streams.security.KafkaSecurity.from_env`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from schemas.config import Config
from schemas.outputs import RiskEvent
from schemas.timefmt import parse_ts
from streams.audit.core import (
    AUDITED,
    FINDING_KINDS,
    LOG_TOPIC,
    AuditInputError,
    Auditor,
    AuditReport,
    Finding,
    Rederiver,
    derive_record,
)
from streams.core.ids import stable_id
from streams.kafka_io import _partitions
from streams.metrics import PREFIX
from streams.security import KafkaSecurity
from streams.topology import SRC_HEADER, Topics

log = structlog.get_logger("riskguard.audit")

FETCH = 2000  # records per poll


def source_of(headers: Any) -> tuple[int, int] | None:
    """The sequenced (partition, offset) an output's `rg-src` marker names (`chain|p|offset.item|j`), if any."""
    for name, value in headers or ():
        if name == SRC_HEADER:
            parts = value.decode(errors="replace").split("|")
            if len(parts) >= 3 and parts[0] == "chain":
                try:
                    return int(parts[1]), int(parts[2].split(".")[0])
                except ValueError:
                    return None
    return None


def _consumer(bootstrap: str, security: KafkaSecurity | None, group: str | None = None) -> AIOKafkaConsumer:
    auth = (security or KafkaSecurity.from_env()).aiokafka_kwargs()
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **auth,
    )


async def _parts(consumer: AIOKafkaConsumer, kafka_topic: str) -> list[TopicPartition]:
    found = sorted(await _partitions(consumer, kafka_topic))
    if not found:
        raise AuditInputError(f"topic {kafka_topic} does not exist: is the config's kafka.topic_prefix right?")
    return [TopicPartition(kafka_topic, p) for p in found]


async def _whole_log(consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> None:
    """Refuse a sequenced log whose start is gone: without it the state (and every decision) differs."""
    starts = await consumer.beginning_offsets(parts)
    gone = [f"{tp.partition} starts at offset {starts[tp]}" for tp in parts if starts[tp] > 0]
    if gone:
        raise AuditInputError(
            f"the sequenced log {parts[0].topic} no longer holds its first records (partition {', '.join(gone)}): "
            "retention deleted them, so its decisions cannot be re-derived"
        )


def _value(raw: bytes | None) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return (raw or b"").decode(errors="replace")


async def _drain(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], take: Callable[[TopicPartition, Any], None]
) -> None:
    """Hand every record below `ends` to `take`, partition by partition in offset order."""
    todo = {tp for tp, end in ends.items() if end > 0}
    while todo:
        batches = await consumer.getmany(*todo, timeout_ms=500, max_records=FETCH)
        for tp, records in batches.items():
            for record in records:
                if record.offset < ends[tp]:
                    take(tp, record)
        for tp in list(todo):
            if await consumer.position(tp) >= ends[tp]:
                todo.discard(tp)


async def audit_once(
    config: Config,
    bootstrap: str,
    since: int | None = None,
    grace: float = 10.0,
    security: KafkaSecurity | None = None,
    allow_duplicates: bool = False,
) -> AuditReport:
    """Audit a deployment once: every decision and halt published so far against the sequenced log."""
    topics = Topics.from_settings(config.kafka)
    rederiver = Rederiver(config)
    auditor = Auditor(config, since=since)
    findings: list[Finding] = []
    consumer = _consumer(bootstrap, security)
    await consumer.start()
    try:
        log_parts = await _parts(consumer, topics.name(LOG_TOPIC))
        names = {topics.name(t): t for t in AUDITED}
        out_parts = [tp for name in names for tp in await _parts(consumer, name)]  # metadata before any assign
        await _whole_log(consumer, log_parts)
        log_ends = await consumer.end_offsets(log_parts)
        consumer.assign(log_parts)
        await consumer.seek_to_beginning(*log_parts)

        def derive(tp: TopicPartition, record: Any) -> None:
            findings.extend(derive_record(rederiver, auditor, tp.partition, record.offset, record.value, 0.0))

        await _drain(consumer, log_ends, derive)
        consumer.assign(out_parts)
        await consumer.seek_to_beginning(*out_parts)

        def match(tp: TopicPartition, record: Any) -> None:
            after = source_of(record.headers)
            findings.extend(auditor.recorded(names[tp.topic], _value(record.value), 0.0, after))

        await _drain(consumer, await consumer.end_offsets(out_parts), match)
        deadline = time.monotonic() + grace
        while auditor.derived_pending and time.monotonic() < deadline:  # the pipeline may still be publishing
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=FETCH)).items():
                for record in records:
                    match(tp, record)
        findings += auditor.finish({tp.partition: end for tp, end in log_ends.items()})
    finally:
        await consumer.stop()
    counts = auditor.counts
    counts["log_records"] = sum(log_ends.values())
    counts["log_items"] = rederiver.stats["items"]
    return AuditReport(counts, findings, allow_duplicates)


def mismatch_event(finding: Finding) -> RiskEvent:
    """The `audit_mismatch` RiskEvent of a finding (a deterministic id: a restarted auditor repeats, never doubles)."""
    try:
        ts = parse_ts(finding.ts) if finding.ts is not None else 0
    except ValueError:
        ts = 0
    return RiskEvent(
        event_id=stable_id("evt", "audit_mismatch", finding.kind, finding.topic, finding.ident, finding.detail),
        kind="audit_mismatch",
        account=finding.account,
        ts=ts,
        details={"finding": finding.kind, "topic": finding.topic, "id": finding.ident, "detail": finding.detail},
    )


@dataclass
class AuditMetrics:
    """The following auditor's metrics, in a registry of its own (served on its own `/metrics`)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r, p = self.registry, f"{PREFIX}_audit"
        self.verified = Counter(f"{p}_verified", "Decisions and halts that re-derive, by topic", ["topic"], registry=r)
        self.findings = Counter(f"{p}_findings", "Findings by kind (mismatch, missing, ...)", ["kind"], registry=r)
        self.mismatch_events = Counter(f"{p}_mismatch_events", "audit_mismatch RiskEvents published", registry=r)
        self.lag = Gauge(f"{p}_lag", "Records not yet read, summed over partitions, by topic", ["topic"], registry=r)
        self.pending = Gauge(f"{p}_pending", "Outputs waiting for their counterpart, by side", ["side"], registry=r)
        self.log_records = Counter(f"{p}_log_records", "Records of the sequenced log re-derived", registry=r)
        for kind in FINDING_KINDS:
            self.findings.labels(kind)
        for topic in AUDITED:
            self.verified.labels(topic)


async def follow(
    config: Config,
    bootstrap: str,
    group: str,
    grace: float = 30.0,
    remember: int = 100_000,
    metrics: AuditMetrics | None = None,
    metrics_port: int | None = None,
    security: KafkaSecurity | None = None,
    stop: asyncio.Event | None = None,
    metrics_bind: str = "127.0.0.1",
) -> dict[str, int]:
    """Run the audit consumer until `stop` is set: derive, match, publish a RiskEvent per finding."""
    topics = Topics.from_settings(config.kafka)
    metrics = metrics or AuditMetrics()
    if metrics_port is not None:
        try:
            start_http_server(metrics_port, addr=metrics_bind, registry=metrics.registry)
        except OSError as exc:
            raise AuditInputError(f"cannot serve /metrics on {metrics_bind}:{metrics_port}: {exc.strerror}") from None
    stop = stop or asyncio.Event()
    rederiver = Rederiver(config)
    auditor = Auditor(config, remember=remember)
    security = security or KafkaSecurity.from_env()
    consumer = _consumer(bootstrap, security, group)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **security.aiokafka_kwargs()
    )
    await consumer.start()
    await producer.start()
    events_topic = topics.name("events")
    try:
        log_parts = await _parts(consumer, topics.name(LOG_TOPIC))
        await _whole_log(consumer, log_parts)
        names = {topics.name(t): t for t in (LOG_TOPIC, *AUDITED)}
        parts = log_parts + [
            tp for name in names if name != topics.name(LOG_TOPIC) for tp in await _parts(consumer, name)
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)  # state needs the whole log; old outputs are matched again
        verified = dict.fromkeys(AUDITED, 0)
        last_tick = last_commit = 0.0

        async def publish(found: list[Finding]) -> None:
            for finding in found:
                log.warning("audit_finding", **finding.to_json())
                metrics.findings.labels(finding.kind).inc()
                event = mismatch_event(finding)
                await producer.send(
                    events_topic,
                    orjson.dumps(event.model_dump(mode="json")),
                    key=finding.account.encode() if finding.account else None,
                )
                metrics.mismatch_events.inc()

        while not stop.is_set():
            now = time.monotonic()
            found: list[Finding] = []
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=FETCH)).items():
                topic = names[tp.topic]
                for record in records:
                    if topic == LOG_TOPIC:
                        found += derive_record(rederiver, auditor, tp.partition, record.offset, record.value, now)
                        metrics.log_records.inc()
                    else:
                        found += auditor.recorded(topic, _value(record.value), now, source_of(record.headers))
            for topic in AUDITED:
                done = auditor.counts[f"verified_{topic}"]
                metrics.verified.labels(topic).inc(done - verified[topic])
                verified[topic] = done
            if now - last_tick >= 0.5:
                last_tick = now
                ends = await consumer.end_offsets(parts)
                behind: dict[str, int] = dict.fromkeys(names.values(), 0)
                for tp in parts:
                    behind[names[tp.topic]] += max(0, ends[tp] - await consumer.position(tp))
                for topic, count in behind.items():
                    metrics.lag.labels(topic).set(count)
                recorded_caught_up = all(behind[t] == 0 for t in AUDITED)
                found += auditor.expire(now, grace, recorded_caught_up, behind[LOG_TOPIC] == 0)
                metrics.pending.labels("derived").set(len(auditor.derived_pending))
                metrics.pending.labels("recorded").set(len(auditor.recorded_pending))
            await publish(found)
            if now - last_commit >= 5.0:
                last_commit = now
                await consumer.commit()
        await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()
    return dict(auditor.counts)
