"""The Faust app: a sequencer and one table-backed agent per guard level (SPEC §1, §2, §7, §8).

    inputs ──► sequencer ──► risk.sequenced ──► level2 (market) ──► risk.level2 ──► level1 (account)
           ──► risk.level1 ──► level3 (symbol) ──► risk.level3 ──► level4 (portfolio) ──► outputs

Each level agent is the same thin shell (`_level_agent`) over the level's stage in
`streams.core.stages` — the code `riskguard replay` runs. It takes the messages its stream has
ready (up to `batch_max`; the sequencer also waits `batch_window_ms` once for more), and for each
partition: applies the items in log order, publishes the outputs, forwards everything the batch
produced as packets (`streams.topology`) to the same partition of the next level, then stores the
touched keys once in its Table (RocksDB by default) with the last offset and item tag applied. Bars
go to every partition, so each partition's log is a complete, replayable sequence.

Effectively-once, by design rather than by Faust's transactions (`streams.core.frames`):
- every stored value carries the offset of the batch that wrote it and the value it replaced, and
  `#applied` is written last: a changelog cut inside a batch restores to the state before it;
- a redelivered offset at or below `#applied` is skipped, and so is an item whose tag (where it came
  from in `risk.sequenced`) is at or below the last one applied: what an upstream level forwarded
  again after it crashed;
- outputs and forwards are in Kafka before the table writes, and those before the offset is reported
  handled, the only way it becomes committable (`streams.offsets.CommitGate`), so a crash loses
  nothing; a batch done again sends no output that a marker (`rg-src`) on the output partition shows
  was already sent; a gap the stream leaves is read directly, never jumped;
- after an unclean stop (no clean-stop marker) the local RocksDB files are dropped and the tables
  are rebuilt from their changelogs, a consistent prefix, instead of trusting local files that may
  be ahead of (or, after Faust's changelog catch-up, mixed with) what Kafka holds.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import orjson
import structlog
from aiokafka.partitioner import murmur2
from faust.streams import _current_event
from faust.types import TP
from prometheus_client import CollectorRegistry

from schemas.config import Config
from schemas.outputs import DeadLetterSource, Decision
from streams import security
from streams.core.frames import APPLIED, Tag, applied_value, fresh, restore, src_marker, stored, unchanged
from streams.core.snapshot import DUMPERS, LOADERS, PARTITION_KEY
from streams.core.stages import AccountStage, Item, MarketStage, Output, PortfolioStage, SymbolStage, item_for
from streams.kafka_io import read_range, sent_markers
from streams.logs import log_output
from streams.metrics import Metrics, faust_lags, install_faust_sensor
from streams.offsets import CommitGate, Refetched
from streams.tape import BadMessage, SecurityRefusal, decode_value, load_json, security_event
from streams.tape import dead_letter as make_dead_letter
from streams.topology import SEQ_HEADER, SRC_HEADER, Topics, decode_tagged, encode_packets

log = structlog.get_logger("riskguard.worker")

LEVELS = ("market", "account", "symbol", "portfolio")
_SOURCES = {"market": "sequenced", "account": "level2", "symbol": "level1", "portfolio": "level3"}
_SINKS = {"market": "level2", "account": "level1", "symbol": "level3", "portfolio": None}
T0_HEADER = "rg-t0"  # wall-clock ms of the oldest input in a packet: decision latency only, never decisions
SENT_DEPTH = 50_000  # records per output partition a level reads back when it takes a partition over
WATCH_INTERVAL_S = 2.0  # how often agents look for partitions whose stream brings nothing below the end
READY_WAIT_S = 0.05  # how long a batch in hand waits for an event the stream already has queued
WATCH_FILL_MAX = 5_000  # records per partition the watchdog reads in one go (the rest at the next ticks)


@dataclass(frozen=True)
class WorkerSettings:
    """How the worker connects, batches and stores state; every field has an environment override."""

    bootstrap: str = "127.0.0.1:9092"
    app_id: str = "riskguard"
    partitions: int = 4
    store: str = "rocksdb://"
    processing_guarantee: str = "at_least_once"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    web_bind: str = "127.0.0.1"
    datadir: str = ".cache/worker"
    batch_max: int = 2000
    batch_window_ms: float = 5.0

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> WorkerSettings:
        env = os.environ
        values: dict[str, Any] = {
            "bootstrap": env.get("KAFKA_BOOTSTRAP_SERVERS", config.kafka.bootstrap_servers),
            "app_id": env.get("RISKGUARD_APP_ID", config.kafka.app_id),
            "partitions": int(env.get("RISKGUARD_PARTITIONS", config.kafka.partitions)),
            "store": env.get("RISKGUARD_STORE", "rocksdb://"),
            "processing_guarantee": env.get("RISKGUARD_PROCESSING_GUARANTEE", "at_least_once"),
            "web_port": int(env.get("RISKGUARD_WEB_PORT", "6066")),
            "web_host": env.get("RISKGUARD_WEB_HOST", "127.0.0.1"),
            "web_bind": env.get("RISKGUARD_WEB_BIND", "127.0.0.1"),
            "datadir": env.get("RISKGUARD_DATADIR", ".cache/worker"),
            "batch_max": int(env.get("RISKGUARD_BATCH_MAX", "2000")),
            "batch_window_ms": float(env.get("RISKGUARD_BATCH_WINDOW_MS", "5.0")),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def control_key() -> bytes | None:
    """The operators' HMAC key from RISKGUARD_CONTROL_KEY (never logged)."""
    key = os.environ.get("RISKGUARD_CONTROL_KEY")
    return key.encode("utf-8") if key else None


def control_checker(config: Config) -> Callable[[dict[str, Any]], str | None]:
    """The signature check of SPEC §8 with this deployment's key and policy."""
    from functools import partial

    from streams.core.controls import check_signature

    return partial(check_signature, key=control_key(), required=config.control.require_signature)


def partition_for(account: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key), so keyed tools agree with the sequencer."""
    return (murmur2(account.encode()) & 0x7FFFFFFF) % partitions


def _new_stage(level: str, config: Config, partition: int) -> Any:
    if level == "market":
        return MarketStage(config, partition)
    return {"account": AccountStage, "symbol": SymbolStage, "portfolio": PortfolioStage}[level](config)


def _touched(level: str, item: Item, forwarded: list[Item]) -> set[str]:
    """The per-account keys a level may have changed while handling `item`."""
    keys = {PARTITION_KEY}
    if item.account is not None:
        keys.add(item.account)
    if level == "account":
        keys.update(i.account for i in forwarded if i.kind in ("account", "control") and i.account is not None)
    elif level in ("symbol", "portfolio") and item.kind == "bar":
        keys.update(item.notes.get("accounts", {}))
    elif level in ("symbol", "portfolio") and item.kind == "control":
        keys.update(i.account for i in forwarded if i.account is not None)
    return keys


def _watchers(stage: Any, item: Item) -> set[str]:
    """Level 3 marks trailing peaks of every watcher of a bar's symbol, with or without a note."""
    if isinstance(stage, SymbolStage) and item.kind == "bar":
        return set(stage.watchers.get(item.event.symbol, ()))
    return set()


async def batches(stream: Any, limit: int, window_s: float = 0.0) -> AsyncIterator[list[Any]]:
    """The events a stream has ready, up to `limit`, as one batch; acked only once the batch is handled.

    No waiting for a batch to fill beyond `window_s` (once, when the stream runs dry): an event that
    arrives alone is handled alone (latency); under load the queue is never empty and batches grow
    (throughput). The acks come after the consumer of a batch returns, never on the way out of a
    cancelled or failed batch.

    The next event is always awaited in a task of its own, and a batch in hand never waits for it for
    long: when a rebalance starts, Faust suspends the streams and waits until every event they handed
    out is acked, so a batch held while waiting for one more event would never be acked, and the
    worker would never finish the rebalance (seen in the add/remove test: every agent idle, Faust
    logging `wait_empty` for 15 minutes, the group stuck rebalancing).
    """
    manual = stream.noack()
    channel = stream.channel
    events = manual.events().__aiter__()
    ahead: asyncio.Future[Any] = asyncio.ensure_future(events.__anext__())
    try:
        while True:
            try:
                batch = [await ahead]  # nothing in hand while this waits
            except StopAsyncIteration:
                return
            ahead = asyncio.ensure_future(events.__anext__())
            waited = False
            while len(batch) < limit:
                if not ahead.done():
                    if channel.empty() and (waited or window_s <= 0):
                        break
                    waited = waited or channel.empty()
                    await asyncio.wait({ahead}, timeout=window_s if channel.empty() else READY_WAIT_S)
                    if not ahead.done():
                        break
                if ahead.exception() is not None:
                    break  # raised again by `await ahead` once this batch is handled
                batch.append(ahead.result())
                ahead = asyncio.ensure_future(events.__anext__())
            yield batch
            for done in batch:
                await manual.ack(done)
    finally:
        ahead.cancel()


class CleanStop:
    """The marker of a worker that stopped cleanly; without it, local table files are not trusted."""

    def __init__(self, appdir: Path) -> None:
        self.appdir = appdir
        self.marker = appdir / "RUNNING"

    def arm(self, tabledir: Path) -> bool:
        """Drop local tables after an unclean stop (they recover from the changelogs); returns True if dropped."""
        self.appdir.mkdir(parents=True, exist_ok=True)
        dropped = False
        if self.marker.exists() and tabledir.exists():
            shutil.rmtree(tabledir)
            dropped = True
        self.marker.write_text(str(os.getpid()), encoding="utf-8")
        atexit.register(self.disarm)
        return dropped

    def disarm(self) -> None:
        if self.marker.exists() and self.marker.read_text(encoding="utf-8") == str(os.getpid()):
            self.marker.unlink()


def build_app(config: Config, settings: WorkerSettings, metrics: Metrics | None = None) -> faust.App:
    """The Faust app with its topics, tables, the sequencer and the four level agents."""
    topics = Topics.from_settings(config.kafka)
    appdir = Path(settings.datadir) / settings.app_id
    metrics = metrics if metrics is not None else Metrics(CollectorRegistry())
    appdir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
        broker_credentials=security.faust_credentials(),
        store=settings.store,
        datadir=str(appdir),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        processing_guarantee=settings.processing_guarantee,
        consumer_auto_offset_reset="earliest",
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_bind,
        key_serializer="raw",
        value_serializer="raw",
        producer_linger_ms=1,
        producer_max_request_size=4 * 1024 * 1024,
        broker_commit_every=2000,
        broker_commit_interval=0.5,
        table_standby_replicas=0,
        stream_buffer_maxsize=8192,
    )
    if settings.store.startswith("rocksdb") and CleanStop(appdir).arm(Path(app.conf.tabledir)):
        log.warning("unclean_stop_local_tables_dropped", tabledir=str(app.conf.tabledir))
    install_faust_sensor(app, metrics.registry)
    n = settings.partitions

    def topic(logical: str, partitions: int | None = None) -> faust.TopicT:
        return app.topic(
            topics.name(logical),
            partitions=partitions or n,
            key_serializer="raw",
            value_serializer="raw",
            internal=True,
        )

    inputs = {
        name: topic(name, 1 if name == "bars" else n) for name in ("bars", "fills", "signals", "equity", "control")
    }
    outputs = {name: topic(name) for name in ("decisions", "halts", "events", "rebalance_runs", "deadletter")}
    internal = {name: topic(name) for name in ("sequenced", "level2", "level1", "level3")}
    by_kafka_name = {topics.name(name): name for name in inputs}
    gate = CommitGate(app, {t.get_topic_name() for t in (*inputs.values(), *internal.values())})

    sequencer_stats: Counter[str] = Counter()
    control_check = control_checker(config)

    async def send_output(output: Output, partition: int | None = None, marker: bytes | None = None) -> None:
        await outputs[output.topic].send(
            key=output.key.encode() if output.key is not None else None,
            value=orjson.dumps(output.value.model_dump(mode="json")),
            partition=partition,
            headers=[(SRC_HEADER, marker)] if marker is not None else None,
            force=True,
        )
        metrics.observe(output)
        log_output(log, output)

    async def dead_letter(event: Any, logical: str, error: str) -> None:
        sequencer_stats["dead_letters"] += 1
        metrics.dead_letter(logical)
        raw = event.value if isinstance(event.value, bytes) else b""
        key = event.key.decode(errors="replace") if isinstance(event.key, bytes) else None
        source = DeadLetterSource(
            topic=event.message.topic, partition=event.message.partition, offset=event.message.offset
        )
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"  # the one wall-clock field (SPEC §4)
        letter = make_dead_letter(source, key, raw, f"{logical}: {error}", when)
        await outputs["deadletter"].send(
            key=event.key,
            value=orjson.dumps(letter.value.model_dump(mode="json")),
            headers=list(event.message.headers or ()),
            force=True,
        )
        log.warning("dead_letter", topic=event.message.topic, offset=event.message.offset, error=error)

    async def sequence(events: list[Any]) -> None:
        packets: dict[int, list[Item]] = {}
        headers: dict[int, list[tuple[str, bytes]]] = {}
        oldest: dict[int, int] = {}

        def add(partition: int, item: Item, event: Any) -> None:
            packets.setdefault(partition, []).append(item)
            headers.setdefault(partition, []).extend(h for h in event.message.headers or () if h[0] == SEQ_HEADER)
            stamp = int((event.message.timestamp or 0) * 1000)  # Faust gives seconds; the rg-t0 header is ms
            oldest[partition] = min(oldest.get(partition, stamp), stamp)

        for event in events:
            logical = by_kafka_name.get(event.message.topic, "?")
            raw = event.value if isinstance(event.value, bytes) else b""
            try:
                value: Any = None  # read below when a control is refused for security
                value = load_json(raw)
                model = decode_value(logical, value, control_check)
            except BadMessage as exc:
                await dead_letter(event, logical, str(exc))
                if isinstance(exc, SecurityRefusal):
                    clock = int(time.time() * 1000)
                    warning = security_event(value if isinstance(value, dict) else {}, str(exc), clock)
                    await send_output(Output("events", warning.key, warning.value))
                continue
            sequencer_stats[f"{logical}_in"] += 1
            item = item_for(logical, model)
            if item.account is None:
                for partition in range(n):
                    add(partition, item, event)
            else:
                add(partition_for(item.account, n), item, event)
        for partition in sorted(packets):
            for packet in encode_packets(packets[partition]):
                await internal["sequenced"].send(
                    key=None,
                    value=packet,
                    partition=partition,
                    headers=[*headers[partition], (T0_HEADER, str(oldest[partition]).encode())],
                    force=True,
                )
                headers[partition] = []  # sequence numbers travel once, on the first packet

    position: dict[Any, int] = {}  # per input partition: the next offset to sequence in this assignment
    sequencing = asyncio.Lock()  # the stream and the watchdog take turns

    async def forget_positions(*_: Any, **__: Any) -> None:
        position.clear()

    app.on_partitions_revoked.connect(forget_positions)

    async def fill(stage: str, tp: Any, first: int, end: int) -> list[Refetched]:
        """What the stream did not hand over between `first` and `end`, read directly (see `streams.offsets`)."""
        missing = await read_range(settings.bootstrap, tp.topic, tp.partition, first, end)
        log.warning(
            "input_gap_filled", stage=stage, topic=tp.topic, partition=tp.partition, first=first, count=len(missing)
        )
        metrics.gap_filled(stage, len(missing))
        return [Refetched(rec) for rec in missing]

    async def sequence_in_order(events: list[Any], upto: dict[Any, int] | None = None) -> None:
        """Sequence each input partition's events from its position on, filling gaps; then report them handled.

        An event below the position was sequenced already in this assignment (skipped); one above it
        means the stream skipped something (Faust drops what it fetched before a rebalance or a
        seek), read here. Before Faust has sought a partition its events are left: they come again.
        `upto` (the watchdog) asks for every partition in it to be read up to that offset.
        """
        generation = gate.current()
        out: list[Any] = []
        moved: dict[Any, int] = {}  # the new positions, kept only once the batch is in Kafka

        def at(tp: Any) -> int | None:
            return moved.get(tp, position.get(tp, gate.start(tp)))

        for event in events:
            message = event.message
            tp = message.tp
            start = at(tp)
            if start is None or message.generation_id != generation or message.offset < start:
                continue
            if message.offset > start:
                out += await fill("sequencer", tp, start, message.offset)
            out.append(event)
            moved[tp] = message.offset + 1
        for tp, end in sorted((upto or {}).items(), key=str):
            start = at(tp)
            if start is not None and end > start:
                out += await fill("sequencer", tp, start, end)
                moved[tp] = end
        if not moved:
            return
        await sequence(out)
        await app.producer.flush()  # the sequenced packets are in Kafka before the offsets may be committed
        if generation != gate.current():
            return  # revoked meanwhile: the next assignment starts from the committed offsets
        position.update(moved)
        for tp, end in moved.items():
            gate.handled(tp, end, generation)

    streams_of: dict[str, Any] = {}  # agent name -> its stream, for the watchdog's `busy`

    @app.agent(app.topic(*inputs_names(inputs, topics), key_serializer="raw", value_serializer="raw"), name="sequencer")
    async def sequencer(stream: Any) -> None:
        streams_of["sequencer"] = stream
        async for events in batches(stream, settings.batch_max, settings.batch_window_ms / 1000.0):
            async with sequencing:
                await sequence_in_order(events)

    async def watch_inputs() -> None:
        """Read what sits below an input partition's end while its stream brings nothing (see `CommitGate`)."""
        if not gate.ready():
            return
        busy = "sequencer" in streams_of and not streams_of["sequencer"].channel.empty()
        mine = [tp for tp in app.consumer.assignment() if tp.topic in by_kafka_name]
        due = gate.overdue("sequencer", {tp: position.get(tp, gate.start(tp)) for tp in mine}, busy, WATCH_FILL_MAX)
        if due:
            async with sequencing:
                await sequence_in_order([], {tp: end for tp, end in due.items() if gate.ready()})

    scans: dict[int, asyncio.Task[set[bytes]]] = {}
    output_names = [topics.name(name) for name in outputs]

    def already_sent(partition: int) -> asyncio.Task[set[bytes]]:
        """The output markers already on partition `partition` (read once per assignment, for all levels)."""
        if partition not in scans:
            scans[partition] = asyncio.ensure_future(
                sent_markers(settings.bootstrap, output_names, partition, SENT_DEPTH, SRC_HEADER)
            )
        return scans[partition]

    async def forget_scans(*_: Any, **__: Any) -> None:
        scans.clear()

    app.on_partitions_revoked.connect(forget_scans)

    registry: dict[str, Callable[[int], Any]] = {}
    watchdogs: list[Callable[[], Awaitable[None]]] = [watch_inputs]
    for level in LEVELS:
        registry[level] = _level_agent(
            app,
            config,
            level,
            internal[_SOURCES[level]],
            internal.get(_SINKS[level] or ""),
            send_output,
            already_sent,
            metrics,
            settings,
            gate,
            fill,
            watchdogs,
        )

    @app.timer(interval=5.0)
    async def consumer_lag() -> None:
        metrics.replace_lags(faust_lags(app))

    @app.timer(interval=WATCH_INTERVAL_S)
    async def watchdog() -> None:
        for watch in watchdogs:
            await watch()

    _register_web(app, config, registry, sequencer_stats, metrics, inputs["control"], n)
    return app


def inputs_names(inputs: dict[str, Any], topics: Topics) -> list[str]:
    return [topics.name(name) for name in inputs]


def _level_agent(
    app: faust.App,
    config: Config,
    level: str,
    source: faust.TopicT,
    sink: faust.TopicT | None,
    send_output: Callable[..., Any],
    already_sent: Callable[[int], Any],
    metrics: Metrics,
    settings: WorkerSettings,
    gate: CommitGate,
    fill: Callable[[str, Any, int, int], Awaitable[list[Refetched]]],
    watchdogs: list[Callable[[], Awaitable[None]]],
) -> Callable[[int], Any]:
    """One level's agent: apply each partition's items once, publish what they produced, then store.

    Per batch and partition, in this order (each step durable before the next, so a crash at any
    point loses nothing and doubles nothing):
    1. skip offsets at or below `#applied` and items whose tag is at or below the last applied tag;
    2. publish the outputs (minus those a predecessor already sent for the same item, `rg-src`) and
       forward the produced items, tagged, to the next level; wait for the broker to have them;
    3. write the touched keys and `#applied` (offset and last tag) to the table; wait for the changelog;
    4. only then is the offset reported handled (`CommitGate`), so it can be committed.
    A crash between 2 and 3 makes the level redo the batch from its previous state: its forwards carry
    the same tags (skipped by the next level) and its outputs the same markers (not sent again).
    """
    table = app.Table(f"level-{level}", default=None, key_type=str, value_type=bytes)
    stages: dict[int, Any] = {}
    applied: dict[int, int] = {}
    high: dict[int, Tag | None] = {}
    sent: dict[int, set[bytes]] = {}
    dump: Callable[..., dict[str, Any]] = DUMPERS[level]
    reached: dict[int, int] = {}  # per partition: the next offset to handle in this assignment
    handling = asyncio.Lock()  # the stream and the watchdog take turns
    topic_name = source.get_topic_name()
    load = LOADERS[level]

    def stage_for(partition: int) -> Any:
        stage = stages.get(partition)
        if stage is None:
            stage = _new_stage(level, config, partition)
            prefix = f"{partition}/"
            mine = []
            for raw_key, value in table.items():
                key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
                if key.startswith(prefix) and value is not None:
                    mine.append((key[len(prefix) :], value))
            offset, hw, state = restore(mine)
            for name in sorted(state):
                load(stage, name, state[name])
            applied[partition] = offset
            high[partition] = hw
            stages[partition] = stage
        return stage

    async def on_revoked(*_: Any, **__: Any) -> None:
        stages.clear()
        reached.clear()
        applied.clear()
        high.clear()
        sent.clear()

    app.on_partitions_revoked.connect(on_revoked)

    def store(partition: int, last_event: Any, stage: Any, keys: set[str], offset: int) -> None:
        _current_event.set(weakref.ref(last_event))  # Faust picks the store and changelog partition from it
        snapshot = dump(stage) if level == "market" else dump(stage, keys)
        prefix = f"{partition}/"
        done = applied.get(partition, -1)
        for key in sorted(snapshot):
            value = snapshot[key]
            cur = value if isinstance(value, bytes) else orjson.dumps(value)
            previous = table.get(prefix + key)
            if unchanged(previous, cur, done):
                continue  # the committed value already says this: no write, no changelog record
            table[prefix + key] = stored(offset, cur, previous, done)
        table[prefix + APPLIED] = applied_value(offset, high.get(partition))
        applied[partition] = offset

    async def handle(partition: int, events: list[Any], generation: int, upto: int | None = None) -> None:
        """Apply the partition's events from its position on, reading any gap the stream left (and up to `upto`)."""
        stage = stage_for(partition)
        if partition not in sent:
            sent[partition] = await already_sent(partition)
        seen = sent[partition]
        tp = TP(topic_name, partition)
        at = max(reached.get(partition, 0), applied.get(partition, -1) + 1)
        records: list[tuple[int, Any, Any]] = []
        anchor = events[-1] if events else None  # Faust picks the table's partition from it
        for event in events:
            message = event.message
            if message.offset < at:
                metrics.duplicate(level)  # redelivered after a crash or rebalance: already applied
                continue
            if message.offset > at:
                records += [(r.offset, r.value, r.headers) for r in await fill(level, tp, at, message.offset)]
            records.append((message.offset, event.value, message.headers))
            at = message.offset + 1
        if upto is not None and upto > at:
            missing = await fill(level, tp, at, upto)
            records += [(r.offset, r.value, r.headers) for r in missing]
            anchor = anchor or (missing[-1] if missing else None)
            at = upto
        keys: set[str] = set()
        results: list[tuple[Output, bytes]] = []
        forwarded: list[Item] = []
        tags: list[Tag] = []
        last = None
        oldest = None
        before = Counter(stage.stats)
        hw = high.get(partition)
        for offset, value, headers in records:
            items, skipped, hw = fresh(decode_tagged(value, offset), hw)
            for _ in range(skipped):
                metrics.duplicate(level)  # forwarded again by an upstream level that redid a batch
            for tag, item in items:
                out, nxt = stage.process(item)
                keys |= _touched(level, item, nxt) | _watchers(stage, item)
                results += [(output, src_marker(level, partition, tag, j)) for j, output in enumerate(out)]
                forwarded += nxt
                tags += [(*tag, j) for j in range(len(nxt))]
            last = offset
            for name, stamp in headers or ():
                if name == T0_HEADER:
                    oldest = int(stamp) if oldest is None else min(oldest, int(stamp))
        if last is not None and anchor is not None:
            high[partition] = hw
            metrics.stage_counts(level, Counter(stage.stats) - before)
            for output, marker in results:
                if marker in seen:
                    metrics.duplicate(level)  # sent before a crash, for an item applied again now
                    continue
                await send_output(output, partition, marker)
                if oldest and isinstance(output.value, Decision):
                    metrics.latency(max(time.time() - oldest / 1000.0, 0.0))
            if sink is not None and forwarded:
                t0 = [(T0_HEADER, str(oldest).encode())] if oldest else []
                for packet in encode_packets(forwarded, tags=tags):
                    await sink.send(key=None, value=packet, partition=partition, headers=t0, force=True)
            if results or forwarded:
                await app.producer.flush()
            store(partition, anchor, stage, keys, last)
            await app.producer.flush()
        reached[partition] = at
        gate.handled(tp, at, generation)

    streams_of: list[Any] = []  # the agent's stream, for the watchdog's `busy`

    async def agent(stream: Any) -> None:
        streams_of[:] = [stream]
        async for events in batches(stream, settings.batch_max):
            generation = gate.current()
            by_partition: dict[int, list[Any]] = {}
            for event in events:
                if event.message.generation_id == generation and gate.ready():  # else it comes again
                    by_partition.setdefault(event.message.partition, []).append(event)
            async with handling:
                for partition in sorted(by_partition):
                    await handle(partition, by_partition[partition], generation)

    async def watch() -> None:
        """Read what sits below a partition's end while the stream brings nothing (see `CommitGate`)."""
        if not gate.ready():
            return
        generation = gate.current()
        busy = any(not stream.channel.empty() for stream in streams_of)

        def position(tp: Any) -> int | None:
            if tp.partition in reached:
                return reached[tp.partition]
            return applied[tp.partition] + 1 if tp.partition in applied else gate.start(tp)

        mine = [tp for tp in app.consumer.assignment() if tp.topic == topic_name]
        due = gate.overdue(level, {tp: position(tp) for tp in mine}, busy, WATCH_FILL_MAX)
        if due:
            async with handling:
                for tp, end in due.items():
                    if gate.ready() and gate.current() == generation:
                        await handle(tp.partition, [], generation, upto=end)

    watchdogs.append(watch)
    app.agent(source, name=f"level-{level}")(agent)
    return stage_for


def _register_web(
    app: faust.App,
    config: Config,
    registry: dict[str, Callable[[int], Any]],
    sequencer_stats: Counter[str],
    metrics: Metrics,
    control_topic: faust.TopicT,
    partitions: int,
) -> None:
    """/health, /metrics, the state and budget views of SPEC §9 and the signed POST /rebalance/{id}.

    A worker answers for the accounts on the partitions it holds; for another partition it says which
    (404), so a router or the operator can ask the worker that holds it.
    """
    from faust.web import View

    from streams import views

    def held(account: str) -> tuple[int, bool]:
        partition = partition_for(account, partitions)
        mine = {tp.partition for tp in app.consumer.assignment() if tp.topic.endswith("risk.level3")}
        return partition, partition in mine

    def answer(web: Any, name: str, account: str) -> Any:
        partition, mine = held(account)
        if not mine:
            return web.json({"error": "partition not held by this worker", "partition": partition}, status=404)
        levels = {level: registry[level](partition) for level in LEVELS}
        data = views.VIEWS[name](levels, account)
        if data is None:
            return web.json({"error": f"unknown account {account!r}", "partition": partition}, status=404)
        return web.json(data)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "app": app.conf.id})

    @app.page("/accounts/{account}/state")
    async def account_state(web: Any, request: Any, account: str) -> Any:
        return answer(web, "state", account)

    @app.page("/budget/{account}")
    async def budget(web: Any, request: Any, account: str) -> Any:
        return answer(web, "budget", account)

    @app.page("/budget/{account}/utilization")
    async def utilization(web: Any, request: Any, account: str) -> Any:
        return answer(web, "utilization", account)

    @app.page("/budget/{account}/recommendations")
    async def recommendations(web: Any, request: Any, account: str) -> Any:
        return answer(web, "recommendations", account)

    @app.page("/rebalance/{account}")
    class Rebalance(View):  # type: ignore[misc]
        async def post(self, request: Any, account: str) -> Any:
            body = await request.read()
            verdict = views.rebalance_request(body, account, control_key(), required=config.control.require_signature)
            if isinstance(verdict, str):
                status = 403 if verdict.startswith("security") else 400
                log.warning("rebalance_request_refused", account=account, status=status, error=verdict)
                return self.json({"error": verdict}, status=status)
            await control_topic.send(key=account.encode(), value=body, force=True)
            return self.json({"accepted": True, "account": account, "nonce": verdict.nonce}, status=202)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        body, content_type = metrics.render()
        lines = ["# TYPE riskguard_sequencer_messages_total counter"]
        for name, value in sorted(sequencer_stats.items()):
            lines.append(f'riskguard_sequencer_messages_total{{name="{name}"}} {value}')
        text = body + ("\n".join(lines) + "\n").encode()
        return web.bytes(text, headers={"Content-Type": content_type})
