"""Which offsets the worker may commit: only what its agents handled and made durable (SPEC §8).

Faust commits from its own ack bookkeeping, and three of its behaviours lost or stalled messages in
the crash tests (docs/reliability.md, bugs A and D):
- its stream skips a message fetched before a rebalance (older generation, or flow control
  suspended) and acks it, so the commit moved past a message no agent had seen;
- its `_new_offset` lets one unacked offset at the head be committed past (`min(acked) - committed
  > 1`, with `committed` the next offset to read);
- its fetcher drops a record below the last offset it read, a mark it resets only after the seek to
  the committed offsets returns, so records fetched again right after the seek could vanish.
And aiokafka's seek to the committed offset leaves a partition where it is when the group has
committed nothing (or 0) for it.

`CommitGate` takes the commit decision away from the acks for the topics the agents consume: the
offset Faust commits for such a partition is the one its agent reported with `handled` (everything
below it applied and in Kafka) in the current consumer generation, never more. A message skipped by
the stream therefore comes again after the next seek, or is read directly: the agents keep a
position per partition, fill any gap between it and what the stream hands them (`read_range`), and
a watchdog (`stalled`) fills what sits below the partition's end while the stream brings nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import structlog
from faust.types import TP

from streams.worker.faust_compat import ConsumerInternals, put_local

log = structlog.get_logger("riskguard.worker")


class DurableTable(faust.Table[Any, Any]):
    """A Faust Table the agents write a batch at a time: each value to the local store and its changelog
    record straight to the producer, the returned future awaited with the batch's other sends.

    `Table.__setitem__` sends each changelog record through `Topic.send_soon`'s envelope (future
    message, pending message, the producer buffer, a callback per record that writes the persisted
    offset to RocksDB): ~15 % of the heavy-load worker. `put` does what it does with public calls
    (`Collection.data`, the app's producer, `Store.set_persisted_offset`,
    `TableManager.persist_offset_on_commit`) and `persisted` records one offset per partition and batch.
    Faust's `producer.flush()` is not relied on: its send buffer gives up after 0.1 s without a send and
    can miss the message being handed over (docs/reliability.md).
    """

    async def put(self, producer: Any, partition: int, key: str, value: bytes) -> asyncio.Future[Any]:
        """Write `key` to the local store of table partition `partition` and send its changelog record.

        `producer` is the app's (`App.maybe_start_producer()`, taken once per batch by the caller). The
        future resolves on the broker's ack, with the record's metadata.
        """
        raw = self.changelog_key(key)
        put_local(self.data, partition, key, raw, value)
        self.app.sensors.on_table_set(self, key, value)  # as `Table.__setitem__` (faust_table_operations_total)
        future: asyncio.Future[Any] = await producer.send(
            self.changelog_topic.get_topic_name(), raw, value, partition, None, None
        )
        return future

    def changelog_key(self, key: str) -> bytes:
        """`key` as its changelog record's key: the bytes Faust's own changelog send gives (JSON, as the
        restore into the store decodes it; the store keys its values the same way). Not cached: a cache
        of every key written cost ~55 MiB of peak RSS in the 1,000-account bench for ~1 µs a put."""
        raw, _ = self.changelog_topic.prepare_key(key, self.key_serializer)
        return bytes(raw)

    def persisted(self, partition: int, offset: int) -> None:
        """The changelog holds this table's partition `partition` up to `offset`: the local store says so,
        now (at least once) or when the transaction commits (exactly once), as Faust's own send callback."""
        tp = TP(self.changelog_topic.get_topic_name(), partition)
        if self.app.in_transaction:
            self.app.tables.persist_offset_on_commit(self.data, tp, offset)
        else:
            self.data.set_persisted_offset(tp, offset)


CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": str(10 * 60 * 1000),
    "segment.bytes": str(64 * 1024 * 1024),
    "min.cleanable.dirty.ratio": "0.1",
    "max.compaction.lag.ms": str(60 * 60 * 1000),
    "delete.retention.ms": str(60 * 60 * 1000),
}
"""Bounded changelogs: segments roll every 10 min (or 64 MiB) and are compacted, so a restore reads
about one value per key however long the worker has run."""


def durable_table(app: faust.App, name: str, partitions: int | None = None) -> DurableTable:
    """A `DurableTable` of JSON bytes by string key, registered with the app, on a bounded changelog."""
    table = DurableTable(
        app,
        name=name,
        default=None,
        key_type=str,
        value_type=bytes,
        partitions=partitions,
        beacon=app.tables.beacon,
        extra_topic_configs=CHANGELOG_CONFIG,
    )
    app.tables.add(table)
    return table


class Refetched:
    """A record read past the stream, shaped like the Faust event an agent handles."""

    def __init__(self, record: Any) -> None:
        self.value = record.value
        self.key = record.key
        self.message = self
        self.topic = record.topic
        self.partition = record.partition
        self.offset = record.offset
        self.tp = TP(record.topic, record.partition)
        self.headers = list(record.headers or ())
        self.timestamp = record.timestamp / 1000.0 if record.timestamp else 0.0


class CommitGate:
    """The commit offsets of the `managed` topics' partitions, from the agents' own progress."""

    def __init__(self, app: faust.App, managed: set[str]) -> None:
        self.app = app
        self.managed = managed
        self.consumer = app.consumer
        self.generation = -1  # the consumer generation whose partitions were last sought
        self.starts: dict[TP, int] = {}  # where each partition was sought to in that generation
        self.done: dict[TP, int] = {}  # per partition: every offset below is handled and durable
        self.idle: dict[Any, int] = {}  # watchdog: the position seen at the previous tick
        self.internals = ConsumerInternals(self.consumer, self.new_offset, self.seek_to_committed)
        app.on_partitions_revoked.connect(self.forget)

    def current(self) -> int:
        return int(self.app.consumer_generation_id)

    def start(self, tp: TP) -> int | None:
        """Where `tp` was sought to in the current generation; None until Faust has sought it."""
        if self.generation != self.current():
            return None
        return self.starts.get(tp)

    def ready(self) -> bool:
        """Partitions sought in the current generation and flow active: agents may fill and watch."""
        return self.generation == self.current() and bool(self.app.flow_control.is_active())

    def handled(self, tp: TP, end: int, generation: int) -> None:
        """Every offset of `tp` below `end` is handled and durable (a no-op after a rebalance)."""
        if generation != self.current() or generation != self.generation:
            return  # an older generation, or revoked since (the next assignment is sought anew)
        if end > self.done.get(tp, -1):
            self.done[tp] = end
            self.internals.offer_for_commit(tp)

    def new_offset(self, tp: TP) -> int | None:
        if tp.topic not in self.managed:
            return self.internals.original_new_offset(tp)
        self.internals.forget_acks(tp)
        return self.done.get(tp)

    async def seek_to_committed(self) -> Any:
        generation = self.current()
        committed = await self.internals.original_seek_to_committed()
        # Faust's fetcher drops records below the last offset read, and resets that mark only after
        # this returns: done here, before any other await, so records fetched again are kept.
        self.internals.reset_read_marks(committed)
        bare = sorted((tp for tp, offset in committed.items() if not offset and tp.topic in self.managed), key=str)
        first: dict[Any, int] = {}
        if bare:
            first = dict(await self.consumer.earliest_offsets(*bare))
            for tp in bare:
                await self.consumer.seek(tp, first.get(tp) or 0)
            log.info("uncommitted_partitions_rewound", partitions=[f"{tp.topic}[{tp.partition}]" for tp in bare])
        if generation == self.current():
            self.starts = {
                tp: int(offset) if offset else int(first.get(tp) or 0)
                for tp, offset in committed.items()
                if tp.topic in self.managed
            }
            self.done = {}
            self.generation = generation
        return committed

    async def forget(self, *_: Any, **__: Any) -> None:
        self.starts.clear()
        self.done.clear()
        self.idle.clear()
        self.generation = -1

    def stalled(self, key: Any, position: int, end: int | None, busy: bool = False) -> bool:
        """Watchdog, called once per tick: `position` is below `end` and has not moved since the last tick.

        `busy` (the agent's stream has messages waiting) means the missing records may be among them:
        a saturated agent is slow, not stalled, and reading past its stream would only add work.
        """
        if end is None or position >= end or busy:
            self.idle.pop(key, None)
            return False
        seen = self.idle.get(key)
        self.idle[key] = position
        return seen == position

    def overdue(self, key: str, positions: dict[TP, int | None], busy: bool, most: int) -> dict[TP, int]:
        """Watchdog: the partitions of `positions` stalled below their end, each with the offset to read up to.

        Called once per tick by an agent with its position per assigned partition (None: not known yet)
        and whether its stream has messages waiting; at most `most` records per partition per tick.
        """
        due: dict[TP, int] = {}
        for tp, at in sorted(positions.items(), key=str):
            end = self.end(tp)
            if at is not None and end is not None and self.stalled((key, tp), at, end, busy):
                due[tp] = min(end, at + most)
        return due

    def end(self, tp: TP) -> int | None:
        """The partition's end as the consumer last saw it (the last stable offset under transactions)."""
        try:
            value = self.consumer.highwater(tp)
        except Exception:  # not assigned any more
            return None
        return int(value) if value is not None else None
