"""`riskguard publish` and `riskguard record`: tapes to and from the real broker (aiokafka).

`publish --ordered` makes the pipeline consume a tape in file order: every message carries an
`rg-seq` header, and before the first line of a different topic the publisher waits until the
sequencer has passed every earlier line (it watches the sequenced log and the dead letters).

Every client made here authenticates and encrypts as `streams.security` reads from the environment
(RISKGUARD_KAFKA_SECURITY_PROTOCOL, _USERNAME, _PASSWORD, _CA_FILE, ...), or as the `security` given.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from streams.security import KafkaSecurity
from streams.topology import SEQ_HEADER, Topics


def _auth(security: KafkaSecurity | None) -> dict[str, Any]:
    return (security or KafkaSecurity.from_env()).aiokafka_kwargs()


class PublishError(RuntimeError):
    """A tape line that cannot be published as an envelope."""


def _envelope(raw: bytes) -> tuple[str, bytes | None, bytes]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "?", None, raw  # sent as is to no topic: counted as skipped
    if not isinstance(data, dict) or "topic" not in data:
        return "?", None, raw
    key = data.get("key")
    value = data.get("value")
    body = orjson.dumps(value) if not isinstance(value, str) else value.encode()
    return str(data["topic"]), key.encode() if isinstance(key, str) else None, body


class _Progress:
    """Watches the sequencer's output for the rg-seq headers it has passed.

    A bar is copied to every partition of the sequenced log, possibly by another worker's sequencer
    than the one that handles the next line, so a line counts as passed only once all its copies
    (or its dead letter) are there.
    """

    def __init__(self, consumer: AIOKafkaConsumer, sequenced: str, partitions: int) -> None:
        self.consumer = consumer
        self.sequenced = sequenced
        self.partitions = max(partitions, 1)
        self.copies: dict[int, int] = {}
        self.expected: dict[int, int] = {}
        self.done: set[int] = set()
        self.contiguous = -1

    def expect(self, seq: int, broadcast: bool) -> None:
        self.expected[seq] = self.partitions if broadcast else 1

    async def wait_for(self, seq: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.contiguous < seq:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sequencer did not reach line {seq + 1} within {timeout:.0f} s")
            batches = await self.consumer.getmany(timeout_ms=5)
            for tp, records in batches.items():
                for record in records:
                    for name, value in record.headers or ():
                        if name != SEQ_HEADER:
                            continue
                        number = int(value)
                        if tp.topic == self.sequenced:
                            self.copies[number] = self.copies.get(number, 0) + 1
                            if self.copies[number] >= self.expected.get(number, 1):
                                self.done.add(number)
                        else:
                            self.done.add(number)
            while self.contiguous + 1 in self.done:
                self.contiguous += 1
                self.done.discard(self.contiguous)
                self.copies.pop(self.contiguous, None)
                self.expected.pop(self.contiguous, None)


async def publish(
    lines: Iterable[bytes],
    topics: Topics,
    bootstrap: str,
    ordered: bool = False,
    rate: float | None = None,
    timeout: float = 120.0,
    on_line: Callable[[int], None] | None = None,
    security: KafkaSecurity | None = None,
) -> dict[str, int]:
    """Produce a tape's envelopes to their Kafka topics; returns counts per logical topic."""
    auth = _auth(security)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks="all", enable_idempotence=True, **auth)
    await producer.start()
    progress: _Progress | None = None
    if ordered:
        watch = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="latest", **auth
        )
        await watch.start()
        parts = []
        for name in ("sequenced", "deadletter"):
            kafka_topic = topics.name(name)
            for partition in sorted(await _partitions(watch, kafka_topic)):
                parts.append(TopicPartition(kafka_topic, partition))
        watch.assign(parts)
        await watch.seek_to_end(*parts)
        for tp in parts:
            await watch.position(tp)
        sequenced = topics.name("sequenced")
        progress = _Progress(watch, sequenced, sum(1 for tp in parts if tp.topic == sequenced))
    counts: dict[str, int] = {}
    previous: str | None = None
    started = time.monotonic()
    try:
        for seq, raw in enumerate(line.strip() for line in lines):
            if not raw:
                continue
            logical, key, value = _envelope(raw)
            if logical == "?":
                counts["skipped"] = counts.get("skipped", 0) + 1
                continue
            if progress is not None and previous is not None and logical != previous and seq > 0:
                await producer.flush()
                await progress.wait_for(_last_seq(counts), timeout)
            if progress is not None:
                progress.expect(_next_seq(counts), broadcast=logical == "bars")
            await producer.send(
                topics.name(logical), value=value, key=key, headers=[(SEQ_HEADER, str(_next_seq(counts)).encode())]
            )
            counts[logical] = counts.get(logical, 0) + 1
            previous = logical
            if rate:
                await asyncio.sleep(max(0.0, _next_seq(counts) / rate - (time.monotonic() - started)))
            if on_line is not None:
                on_line(seq)
        await producer.flush()
        if progress is not None and _next_seq(counts) > 0:
            await progress.wait_for(_last_seq(counts), timeout)
    finally:
        await producer.stop()
        if progress is not None:
            await progress.consumer.stop()
    return counts


def _next_seq(counts: dict[str, int]) -> int:
    return sum(v for k, v in counts.items() if k != "skipped")


def _last_seq(counts: dict[str, int]) -> int:
    return _next_seq(counts) - 1


async def record(
    topics: Topics,
    bootstrap: str,
    logical_topics: list[str],
    sink: IO[bytes],
    idle: float = 5.0,
    limit_s: float = 600.0,
    security: KafkaSecurity | None = None,
) -> dict[str, int]:
    """Consume topics from the beginning (read_committed) until idle; write a tape of envelopes.

    A record of the sequenced log also carries its `partition` and `offset`: `riskguard replay` and `verify`
    re-derive each partition on its own (`streams.audit.core.replay_log`).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **_auth(security),
    )
    await consumer.start()
    counts: dict[str, int] = {}
    try:
        names = {topics.name(t): t for t in logical_topics}
        parts: list[TopicPartition] = []
        for kafka_topic in names:
            for partition in sorted(await _partitions(consumer, kafka_topic)):
                parts.append(TopicPartition(kafka_topic, partition))
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        last = time.monotonic()
        deadline = last + limit_s
        while time.monotonic() - last < idle and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batches.items():
                for rec in records:
                    value: Any = orjson.loads(rec.value) if rec.value else None
                    key = rec.key.decode() if rec.key else None
                    envelope: dict[str, Any] = {"topic": names[tp.topic], "key": key, "value": value}
                    if names[tp.topic] == "sequenced":  # each partition is a log of its own: say which
                        envelope["partition"], envelope["offset"] = tp.partition, rec.offset
                    sink.write(orjson.dumps(envelope) + b"\n")
                    counts[names[tp.topic]] = counts.get(names[tp.topic], 0) + 1
                    last = time.monotonic()
    finally:
        await consumer.stop()
    return counts


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    return set()


async def ensure_topics(
    topics: Topics, bootstrap: str, partitions: int, security: KafkaSecurity | None = None
) -> list[str]:
    """Create the input, output and internal topics that do not exist yet (bars: one partition, the market clock).

    The internal topics (`risk.market`, `risk.sequenced`) too: Faust creates them itself at start-up, but
    a consumer group assigned before they exist leaves them unassigned until the next metadata refresh
    (5 min), and the level agents that read them sit idle (seen once in a clean-clone `make test`).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **_auth(security))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(topics.name(name), 1 if name in ("bars", "market") else partitions, 1)
            for name in (
                "bars",
                "fills",
                "signals",
                "equity",
                "control",
                "decisions",
                "halts",
                "events",
                "rebalance_runs",
                "deadletter",
                "market",
                "sequenced",
            )
            if topics.name(name) not in existing
        ]
        if wanted:
            await admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def wait_drained(
    topics: Topics,
    bootstrap: str,
    app_id: str,
    timeout: float = 180.0,
    settle: float = 1.5,
    security: KafkaSecurity | None = None,
) -> bool:
    """Wait until the app's consumer group has committed every input and internal topic to its end.

    Under exactly_once the logs end with transaction markers (and may hold aborted records), which
    are never consumed, so the committed offset stays short of the end offset: a partition also
    counts as drained when a read_committed consumer finds no record between the two.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    names = [topics.name(n) for n in ("bars", "fills", "signals", "equity", "control")]
    names += [topics.name("market"), topics.name("sequenced")]
    auth = _auth(security)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **auth)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **auth)
    committed_reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed", **auth
    )
    await admin.start()
    await consumer.start()
    await committed_reader.start()
    try:
        parts = [TopicPartition(name, p) for name in names for p in sorted(await _partitions(consumer, name))]
        for name in names:
            await _partitions(committed_reader, name)
        deadline = time.monotonic() + timeout
        drained_since: float | None = None
        markers_only: set[tuple[TopicPartition, int, int]] = set()
        while time.monotonic() < deadline:
            ends = await consumer.end_offsets(parts)
            committed = await admin.list_consumer_group_offsets(app_id)
            # the sequencer's inputs are committed by its own group (`streams.worker.sequencer`)
            committed = {**committed, **await admin.list_consumer_group_offsets(app_id + "-sequencer")}
            behind = [tp for tp in parts if ends[tp] > 0 and (tp not in committed or committed[tp].offset < ends[tp])]
            still = []
            for tp in behind:
                start = max(committed[tp].offset, 0) if tp in committed else 0
                if (tp, start, ends[tp]) in markers_only:
                    continue
                if await _nothing_committed(committed_reader, tp, start, ends[tp]):
                    markers_only.add((tp, start, ends[tp]))
                else:
                    still.append(tp)
            behind = still
            if not behind:
                drained_since = drained_since or time.monotonic()
                if time.monotonic() - drained_since >= settle:
                    return True
            else:
                drained_since = None
            await asyncio.sleep(0.25)
        return False
    finally:
        await committed_reader.stop()
        await consumer.stop()
        await admin.close()


async def _nothing_committed(reader: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int) -> bool:
    """True when a read_committed consumer finds no record in [start, end): only markers or aborted ones."""
    reader.assign([tp])
    reader.seek(tp, start)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        batches = await reader.getmany(tp, timeout_ms=200, max_records=1)
        if any(batches.values()):
            return False
        if await reader.position(tp) >= end:
            return True
    return False


@contextlib.asynccontextmanager
async def _reader(bootstrap: str, security: KafkaSecurity | None) -> AsyncIterator[AIOKafkaConsumer]:
    """A started read_committed consumer without a group (assign and seek by hand); stopped on the way out."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed", **_auth(security)
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def sent_markers(
    bootstrap: str,
    kafka_topics: Iterable[str],
    partition: int,
    depth: int,
    header: str,
    limit_s: float = 60.0,
    security: KafkaSecurity | None = None,
) -> set[bytes]:
    """The `header` values of the last `depth` records of partition `partition` of each topic.

    A level that takes over a partition reads what its predecessor already sent, so a batch it
    applies again after a crash does not publish the same output twice (`streams.worker`).
    """
    found: set[bytes] = set()
    async with _reader(bootstrap, security) as consumer:
        parts = [TopicPartition(t, partition) for t in kafka_topics if partition in await _partitions(consumer, t)]
        if not parts:
            return found
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        starts = await consumer.beginning_offsets(parts)
        todo: set[TopicPartition] = set()
        for tp in parts:
            first = max(starts[tp], ends[tp] - depth)
            if first < ends[tp]:
                consumer.seek(tp, first)
                todo.add(tp)
        deadline = time.monotonic() + limit_s
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read the last {depth} records of {sorted(map(str, todo))}")
            batches = await consumer.getmany(*todo, timeout_ms=500, max_records=10_000)
            for tp, records in batches.items():
                for rec in records:
                    found.update(value for name, value in rec.headers or () if name == header)
                    if rec.offset >= ends[tp] - 1:
                        todo.discard(tp)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
    return found


async def read_range(
    bootstrap: str,
    topic: str,
    partition: int,
    start: int,
    end: int,
    limit_s: float = 60.0,
    security: KafkaSecurity | None = None,
) -> list[Any]:
    """The records at offsets `start` (inclusive) to `end` (exclusive) of one partition, in order.

    An agent reads what its stream did not deliver (Faust skips messages fetched before a rebalance
    or a seek), so a gap between its position and what it is handed is filled, never jumped.
    """
    found: list[Any] = []
    async with _reader(bootstrap, security) as consumer:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        first = (await consumer.beginning_offsets([tp]))[tp]  # older records may be gone (retention)
        consumer.seek(tp, max(start, first))
        deadline = time.monotonic() + limit_s
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic}[{partition}] offsets {start}..{end - 1}")
            batches = await consumer.getmany(tp, timeout_ms=500, max_records=10_000)
            found += [rec for recs in batches.values() for rec in recs if rec.offset < end]
    return found
