"""The shell every table-backed agent shares: one batch is one crash-safe unit (SPEC §8).

An agent over a partitioned log (the market agent on `market.bars`, the level chain on
`risk.sequenced`) handles each partition's part of a batch in this order:

1. skip offsets at or below the partition's `#applied` (redelivered after a crash or rebalance) and
   read any gap its stream left (`fill`), so every offset is applied once, in log order;
2. `apply` the records to the partition's in-memory state (the pure core) and send what they
   produced, minus what a marker (`rg-src`) on the destination partitions shows was already sent;
3. write the touched keys to the tables (each value framed with the batch offset and the value it
   replaces, `streams.core.frames`; `DurableTable.put`: the local store, and the changelog record
   straight to the producer), then await, once, the broker's ack of every send and changelog record
   of the batch, and record each table partition's highest changelog offset in its store;
4. write the one marker, `#applied`, to the marker table; when the broker acks it, the offsets are
   reported handled (`CommitGate`) and may be committed. The next batch of the partition waits for
   that ack before it writes a value (usually long done), because a value's undo part is the state
   as of the last marker that is in Kafka.

A crash before a marker lands restores every table to the state before that batch, and the batch is
done again: it sends the same records with the same markers and ids, which are not sent twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import faust
import orjson
import structlog
from faust.types import TP

from streams.core.frames import APPLIED, applied_of, applied_value, restore_at, stored, unchanged
from streams.logs import flush_decision_lines
from streams.metrics import Metrics
from streams.topology import SRC_HEADER
from streams.worker.batching import batches
from streams.worker.commit import CommitGate, DurableTable, Refetched
from streams.worker.faust_compat import set_current_event
from streams.worker.settings import WorkerSettings

log = structlog.get_logger("riskguard.worker")

WATCH_FILL_MAX = 5_000  # records per partition the watchdog reads in one go (the rest at the next ticks)
T0_HEADER = "rg-t0"  # wall-clock ms of the oldest input in a message: decision latency only, never decisions


class Record(NamedTuple):
    """One record of the source log."""

    offset: int
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]]
    timestamp_ms: int


def record_of(event: Any) -> Record:
    """A Faust event (or a record read past the stream) as a `Record`."""
    message = event.message
    stamp = message.timestamp or 0.0  # Faust gives seconds
    return Record(message.offset, event.key, event.value, tuple(message.headers or ()), int(stamp * 1000))


Fill = Callable[[str, Any, int, int], Awaitable[list[Refetched]]]


@dataclass(frozen=True, slots=True)
class Send:
    """A record a batch produces: where it goes and the marker that makes it recognisable if sent again."""

    topic: faust.TopicT
    key: bytes | None
    value: bytes
    partition: int | None
    marker: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    on_sent: Callable[[], None] | None = None  # metrics and log lines of a published output


@dataclass(slots=True)
class Applied:
    """What applying a partition's records produced: the sends and, per table, the keys touched."""

    sends: list[Send] = field(default_factory=list)
    touched: dict[str, set[str]] = field(default_factory=dict)


@dataclass(slots=True)
class Runtime:
    """The services an agent's shell needs from the app."""

    app: faust.App
    settings: WorkerSettings
    metrics: Metrics
    gate: CommitGate
    fill: Fill
    already_sent: Callable[[int, tuple[str, ...]], Awaitable[set[bytes]]]


class PartitionedAgent:
    """A table-backed agent: subclasses say how to restore a partition's state, apply records and dump state."""

    name = "agent"
    # After a batch of more than one record, wait once, up to the batch window (`batch_window_ms`), for
    # more: the market agent, whose bars come as a burst each bar time, so that a burst becomes a few
    # market packets, not one per fetch (each packet rewrites every level's `@` in every partition).
    gathers = False

    def __init__(
        self,
        runtime: Runtime,
        source: faust.TopicT,
        tables: dict[str, DurableTable],
        marker_table: str,
        sent_topics: tuple[str, ...],
    ) -> None:
        self.rt = runtime
        self.source = source
        self.topic_name = source.get_topic_name()
        self.tables = tables
        self.marker = marker_table
        self.marker_table = tables[marker_table]
        self.sent_topics = sent_topics
        self.states: dict[int, Any] = {}
        # per partition, table and key: the value the table holds (read once at restore, then kept as
        # written), so storing a batch compares with memory instead of reading RocksDB back
        self.held: dict[int, dict[str, dict[str, bytes]]] = {}
        self.durable: dict[int, int] = {}  # per partition: the last `#applied` the broker has
        self.pending: dict[int, asyncio.Future[Any]] = {}  # per partition: a marker sent, not yet acked
        self.sent: dict[int, set[bytes]] = {}
        self.reached: dict[int, int] = {}  # per partition: the next offset to handle in this assignment
        self.handling = asyncio.Lock()  # the stream and the watchdog take turns
        self.streams: list[Any] = []
        runtime.app.on_partitions_revoked.connect(self.forget)

    # -- what a subclass provides -----------------------------------------------------------------
    def restore(self, partition: int, values: dict[str, dict[str, Any]]) -> Any:
        """The partition's state from each table's committed values (`values[table][key]`)."""
        raise NotImplementedError

    def apply(self, partition: int, state: Any, records: list[Record]) -> Applied:
        """Apply records in log order to `state`; what to send and which keys of which table changed."""
        raise NotImplementedError

    def dump(self, state: Any, table: str, keys: set[str]) -> dict[str, Any]:
        """The JSON-able (or pre-serialised bytes) values of `keys` of `table`."""
        raise NotImplementedError

    # -- the shell ----------------------------------------------------------------------------------
    def state_for(self, partition: int) -> Any:
        """The partition's state, restored from the tables at the first use in an assignment."""
        state = self.states.get(partition)
        if state is None:
            # Scanned, never `get`: Faust's RocksDB store looks a key up only in the partition of the
            # current event, which here may be another partition's.
            prefix = f"{partition}/"
            stored_values: dict[str, list[tuple[str, bytes]]] = {}
            for name, table in self.tables.items():
                mine = stored_values[name] = []
                for raw_key, value in table.items():
                    key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
                    if key.startswith(prefix) and value is not None:
                        mine.append((key[len(prefix) :], value))
            done = applied_of(dict(stored_values[self.marker]).get(APPLIED))
            self.held[partition] = {name: dict(mine) for name, mine in stored_values.items()}
            values = {name: restore_at(mine, done) for name, mine in stored_values.items()}
            state = self.states[partition] = self.restore(partition, values)
            self.durable[partition] = done
        return state

    async def forget(self, *_: Any, **__: Any) -> None:
        self.states.clear()
        self.held.clear()
        self.reached.clear()
        self.durable.clear()
        self.pending.clear()
        self.sent.clear()

    async def _records(self, partition: int, events: list[Any], upto: int | None) -> tuple[list[Record], Any, int]:
        """The partition's records from its position on, gaps read; the anchor event; the next position."""
        rt = self.rt
        tp = TP(self.topic_name, partition)
        at = max(self.reached.get(partition, 0), self.durable.get(partition, -1) + 1)
        records: list[Record] = []
        anchor = events[-1] if events else None  # Faust picks the tables' changelog partition from it
        for event in events:
            message = event.message
            if message.offset < at:
                rt.metrics.duplicate(self.name)  # redelivered after a crash or rebalance: already applied
                continue
            if message.offset > at:
                records += [record_of(r) for r in await rt.fill(self.name, tp, at, message.offset)]
            records.append(record_of(event))
            at = message.offset + 1
        if upto is not None and upto > at:
            missing = await rt.fill(self.name, tp, at, upto)
            records += [record_of(r) for r in missing]
            anchor = anchor or (missing[-1] if missing else None)
            at = upto
        return records, anchor, at

    async def handle(self, batch: dict[int, list[Any]], generation: int, upto: dict[int, int] | None = None) -> None:
        """Apply each partition's events from its position on (gaps read, and up to `upto`), as one unit.

        Every partition of the batch is applied and sent first, then the tables are written, and one
        wait covers the broker's acks of all of it: a batch costs one round trip, not one per partition.
        The batch's decision log lines are written out together once its records are in Kafka.
        """
        try:
            await self._handle(batch, generation, upto)
        finally:
            flush_decision_lines()

    async def _handle(self, batch: dict[int, list[Any]], generation: int, upto: dict[int, int] | None) -> None:
        rt = self.rt
        done: list[tuple[int, Any, int, int]] = []  # partition, anchor, last offset, next position
        unacked: list[asyncio.Future[Any]] = []
        writes: list[tuple[int, Any, Any, dict[str, set[str]], int]] = []
        producer = await rt.app.maybe_start_producer()  # once per batch (the transaction manager under EOS)
        for partition in sorted(set(batch) | set(upto or {})):
            state = self.state_for(partition)
            if partition not in self.sent:
                self.sent[partition] = await rt.already_sent(partition, self.sent_topics)
            seen = self.sent[partition]
            records, anchor, at = await self._records(partition, batch.get(partition, []), (upto or {}).get(partition))
            if not records or anchor is None:
                if partition not in self.pending:
                    rt.gate.handled(TP(self.topic_name, partition), at, generation)  # nothing new below `at`
                self.reached[partition] = at
                continue
            applied = self.apply(partition, state, records)
            for send in applied.sends:
                if send.marker in seen:
                    rt.metrics.duplicate(self.name)  # sent before a crash, for a record applied again now
                    continue
                unacked.append(await publish(producer, send))
            last = records[-1].offset
            writes.append((partition, anchor, state, applied.touched, last))
            done.append((partition, anchor, last, at))
            self.reached[partition] = at
            # let the producer put this partition's decisions on the wire before the next partition is
            # applied (and before the table writes): a decision waits for its own partition, not the batch
            await asyncio.sleep(0)
        if not done:
            return
        for partition, *_ in writes:
            await self._settle(partition)
        changelog: list[tuple[DurableTable, int, asyncio.Future[Any]]] = []
        for partition, anchor, state, touched, last in writes:
            if self.states.get(partition) is not state:
                continue  # revoked while this batch waited (the watchdog's reads are not waited for): not ours
            set_current_event(anchor)
            for table, key, value in self._store(partition, state, touched, last):
                sent = await table.put(producer, partition, key, value)
                changelog.append((table, partition, sent))
                unacked.append(sent)
        await asyncio.gather(*unacked)  # every send and changelog record of the batch is in Kafka
        persisted(changelog)
        state_of = {partition: state for partition, _, state, _, _ in writes}
        for partition, anchor, last, at in done:
            if self.states.get(partition) is not state_of[partition]:
                continue  # revoked meanwhile: the next owner redoes this batch from the last marker
            set_current_event(anchor)
            marker = await self.marker_table.put(producer, partition, f"{partition}/{APPLIED}", applied_value(last))
            self.pending[partition] = marker
            tp = TP(self.topic_name, partition)
            marker.add_done_callback(
                partial(self._marked, partition=partition, last=last, tp=tp, at=at, gen=generation)
            )

    async def _settle(self, partition: int) -> None:
        """Wait for the partition's last marker: the values about to be written undo to the state it records."""
        pending = self.pending.get(partition)
        if pending is not None:
            await asyncio.shield(pending)

    def _marked(self, done: asyncio.Future[Any], *, partition: int, last: int, tp: TP, at: int, gen: int) -> None:
        if done.cancelled() or done.exception() is not None:
            log.error("marker_not_written", topic=tp.topic, partition=partition, offset=last)
            return
        if self.pending.get(partition) is done:
            del self.pending[partition]
        self.marker_table.persisted(partition, done.result().offset)
        if last > self.durable.get(partition, -1):
            self.durable[partition] = last
        self.rt.gate.handled(tp, at, gen)

    def _store(
        self, partition: int, state: Any, touched: dict[str, set[str]], offset: int
    ) -> list[tuple[DurableTable, str, bytes]]:
        """The table writes of a batch: each touched key whose committed value it changes, framed."""
        prefix = f"{partition}/"
        done = self.durable.get(partition, -1)
        held = self.held.setdefault(partition, {})
        puts: list[tuple[DurableTable, str, bytes]] = []
        for name, table in self.tables.items():
            snapshot = self.dump(state, name, touched.get(name, set()))
            values = held.setdefault(name, {})
            for key in sorted(snapshot):
                value = snapshot[key]
                cur = value if isinstance(value, bytes) else orjson.dumps(value)
                previous = values.get(key)
                if unchanged(previous, cur, done):
                    continue  # the committed value already says this: no write, no changelog record
                framed = stored(offset, cur, previous, done)
                puts.append((table, prefix + key, framed))
                values[key] = framed
        return puts

    async def run(self, stream: Any) -> None:
        """The agent: batches of the stream, every partition's part applied and made durable as one unit."""
        self.streams[:] = [stream]
        gate = self.rt.gate
        settings = self.rt.settings
        window_s = settings.batch_window_ms / 1000.0 if self.gathers else 0.0
        async for events in batches(stream, settings.batch_max, window_s):
            generation = gate.current()
            by_partition: dict[int, list[Any]] = {}
            for event in events:
                if event.message.generation_id == generation and gate.ready():  # else it comes again
                    by_partition.setdefault(event.message.partition, []).append(event)
            async with self.handling:
                await self.handle(by_partition, generation)

    async def watch(self) -> None:
        """Read what sits below a partition's end while the stream brings nothing (see `CommitGate`)."""
        gate = self.rt.gate
        if not gate.ready():
            return
        generation = gate.current()
        busy = any(not stream.channel.empty() for stream in self.streams)

        def position(tp: Any) -> int | None:
            if tp.partition in self.reached:
                return self.reached[tp.partition]
            return self.durable[tp.partition] + 1 if tp.partition in self.durable else gate.start(tp)

        mine = [tp for tp in self.rt.app.consumer.assignment() if tp.topic == self.topic_name]
        due = gate.overdue(self.name, {tp: position(tp) for tp in mine}, busy, WATCH_FILL_MAX)
        if due:
            async with self.handling:
                if gate.ready() and gate.current() == generation:
                    await self.handle({}, generation, upto={tp.partition: end for tp, end in due.items()})


def persisted(changelog: list[tuple[DurableTable, int, asyncio.Future[Any]]]) -> None:
    """Tell each table's store the highest changelog offset the batch wrote per partition (all acked)."""
    highest: dict[tuple[DurableTable, int], int] = {}
    for table, partition, sent in changelog:
        offset = sent.result().offset
        if offset > highest.get((table, partition), -1):
            highest[(table, partition)] = offset
    for (table, partition), offset in highest.items():
        table.persisted(partition, offset)


async def publish(producer: Any, send: Send) -> asyncio.Future[Any]:
    """Hand `send`, with its marker header, to the app's producer; the future resolves on the broker's ack.

    `producer` is what `App.maybe_start_producer` gives, taken once per batch: the public producer API
    that `Topic.send` ends in (the transaction manager under exactly-once, so the record joins the
    partition's transaction as before), without `Topic.send`'s per-message envelope (future message,
    pending message, send sensors, callbacks): a tenth of the worker at 1,000 decisions/s. The outputs
    are counted by the worker's own metrics.
    """
    headers = [*send.headers, (SRC_HEADER, send.marker)]
    future: asyncio.Future[Any] = await producer.send(
        send.topic.get_topic_name(), send.key, send.value, send.partition, None, headers
    )
    if send.on_sent is not None:
        send.on_sent()
    return future


def oldest_t0(headers: Sequence[tuple[str, bytes]], oldest: int | None) -> int | None:
    """The earliest `rg-t0` stamp of a record's headers and `oldest` (latency only)."""
    for name, stamp in headers:
        if name == T0_HEADER:
            value = int(stamp)
            oldest = value if oldest is None else min(oldest, value)
    return oldest


def latency_since(t0_ms: int) -> float:
    """Seconds from an input's wall-clock stamp to now (the decision latency metric)."""
    return max(time.time() - t0_ms / 1000.0, 0.0)
