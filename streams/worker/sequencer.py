"""The sequencer: validate once, dead-letter bad input, write each partition's ordered log (SPEC §2, §7).

It reads the account topics (fills, signals, equity, control) and `risk.market` (bars with Level 2's
notes, from the market agent) in arrival order and writes `risk.sequenced`: each account's events to
the account's partition, each bar and cluster map to every partition, so that every partition of the
log is a complete, replayable sequence for its accounts. A message that is not valid input goes to
the dead letter with its origin (topic, partition, offset); a refused control also raises a
`security` event; nothing it reads can stop it.

The sequencer keeps no table: its progress is the offsets it reports handled once its packets are in
Kafka (`CommitGate`). A crash in between sequences those inputs again; the levels drop what they
already applied (repeated fill and signal ids, out-of-order equity, a bar at or before its symbol's
last, a nonce seen before).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import faust
import structlog

from schemas.outputs import DeadLetterSource
from streams.core.items import Item, Output, item_for
from streams.tape import BadMessage, SecurityRefusal, decode_value, load_json, security_event
from streams.topology import SEQ_HEADER, decode_packet, encode_item, pack, packet_body
from streams.worker.batching import batches
from streams.worker.commit import Refetched
from streams.worker.outputs import Outputs
from streams.worker.partitioned import T0_HEADER, WATCH_FILL_MAX, Runtime, Send, oldest_t0, publish, record_of
from streams.worker.settings import partition_for

log = structlog.get_logger("riskguard.worker")

ControlCheck = Callable[[dict[str, Any]], str | None]


class Sequencer:
    """The sequencer agent and its watchdog."""

    def __init__(
        self,
        runtime: Runtime,
        inputs: dict[str, faust.TopicT],
        sequenced: faust.TopicT,
        outputs: Outputs,
        control_check: ControlCheck,
    ) -> None:
        self.rt = runtime
        self.by_kafka_name = {topic.get_topic_name(): logical for logical, topic in inputs.items()}
        self.sequenced = sequenced
        self.outputs = outputs
        self.control_check = control_check
        self.partitions = runtime.settings.partitions
        self.stats: Counter[str] = Counter()
        self.position: dict[Any, int] = {}  # per input partition: the next offset to sequence in this assignment
        self.lock = asyncio.Lock()  # the stream and the watchdog take turns
        self.streams: list[Any] = []
        runtime.app.on_partitions_revoked.connect(self.forget)

    async def forget(self, *_: Any, **__: Any) -> None:
        self.position.clear()

    def _decode(self, logical: str, event: Any, sends: list[Send]) -> list[Item]:
        """The items of one input message, or [] with its dead letter (and `security` event) in `sends`."""
        record = record_of(event)
        source = DeadLetterSource(topic=event.message.topic, partition=event.message.partition, offset=record.offset)
        value: Any = None  # read below when a control is refused for security
        try:
            if logical == "market":  # not framed as the market agent frames its packets
                return decode_packet(record.value if isinstance(record.value, bytes) else b"")
            value = load_json(record.value if isinstance(record.value, bytes) else b"")
            return [item_for(logical, decode_value(logical, value, self.control_check))]
        except BadMessage as exc:
            error, refused = str(exc), isinstance(exc, SecurityRefusal)
        except Exception as exc:  # no input may stop the sequencer (SPEC §8)
            self.rt.metrics.level_error("sequencer")
            error, refused = f"sequencer: {type(exc).__name__}: {exc}", False
        self.stats["dead_letters"] += 1
        seq = tuple(h for h in record.headers if h[0] == SEQ_HEADER)
        sends.append(self.outputs.rejected(logical, source, record.key, record.value or b"", error, seq))
        if refused:
            warning = security_event(value if isinstance(value, dict) else {}, error, int(time.time() * 1000))
            marker = f"sec|{source.topic}|{source.partition}|{source.offset}".encode()
            sends.append(self.outputs.send(Output("events", warning.key, warning.value), None, marker))
        return []

    def _parts(self, logical: str, event: Any, sends: list[Send]) -> tuple[list[bytes], int | None]:
        """The encoded items of one input message and their partition (None: every partition).

        A `risk.market` packet (bars with Level 2's notes, cluster maps) is copied into the partitions'
        packets as it is, unparsed: the market agent validated its bars. Everything else is validated
        here, once, and encoded once, however many partitions it goes to.
        """
        if logical == "market":
            body = packet_body(event.value) if isinstance(event.value, bytes) else None
            if body is not None:
                return ([body] if body else []), None
        items = self._decode(logical, event, sends)
        parts = [encode_item(item) for item in items]
        if logical == "market" or not items or any(item.account is None for item in items):
            return parts, None
        return parts, partition_for(items[0].account or "", self.partitions)

    def sequence(self, events: list[Any]) -> list[Send]:
        """The packets (and dead letters) of a batch of input events, in arrival order per partition."""
        packets: dict[int, list[bytes]] = {}
        headers: dict[int, list[tuple[str, bytes]]] = {}
        oldest: dict[int, int] = {}
        sends: list[Send] = []
        every = range(self.partitions)
        for event in events:
            logical = self.by_kafka_name.get(event.message.topic, "?")
            parts, target = self._parts(logical, event, sends)
            record = record_of(event)
            seq = [h for h in record.headers if h[0] == SEQ_HEADER]
            if not parts and not (seq and logical == "market"):
                continue
            self.stats[f"{'market_packets' if logical == 'market' else logical}_in"] += 1
            stamp = oldest_t0(record.headers, None) or record.timestamp_ms
            for partition in every if target is None else (target,):
                packets.setdefault(partition, []).extend(parts)
                headers.setdefault(partition, []).extend(seq)
                oldest[partition] = min(oldest.get(partition, stamp), stamp)
        for partition in sorted(packets):
            encoded = pack(packets[partition]) or [b'{"items":[]}']
            t0 = (T0_HEADER, str(oldest[partition]).encode())
            for k, packet in enumerate(encoded):
                # sequence numbers travel once, on the last packet: seen there, every item of the batch is in
                last = (*headers[partition], t0) if k == len(encoded) - 1 else (t0,)
                sends.append(Send(self.sequenced, None, packet, partition, b"", last))
        return sends

    async def sequence_in_order(self, events: list[Any], upto: dict[Any, int] | None = None) -> None:
        """Sequence each input partition's events from its position on, filling gaps; then report them handled.

        An event below the position was sequenced already in this assignment (skipped); one above it
        means the stream skipped something (Faust drops what it fetched before a rebalance or a
        seek), read here. Before Faust has sought a partition its events are left: they come again.
        `upto` (the watchdog) asks for every partition in it to be read up to that offset.
        """
        gate = self.rt.gate
        generation = gate.current()
        out: list[Any] = []
        moved: dict[Any, int] = {}  # the new positions, kept only once the batch is in Kafka

        def at(tp: Any) -> int | None:
            return moved.get(tp, self.position.get(tp, gate.start(tp)))

        for event in events:
            message = event.message
            tp = message.tp
            start = at(tp)
            if start is None or message.generation_id != generation or message.offset < start:
                continue
            if message.offset > start:
                out += await self.rt.fill("sequencer", tp, start, message.offset)
            out.append(event)
            moved[tp] = message.offset + 1
        for tp, end in sorted((upto or {}).items(), key=str):
            start = at(tp)
            if start is not None and end > start:
                out += await self.rt.fill("sequencer", tp, start, end)
                moved[tp] = end
        if not moved:
            return
        unacked = []
        for send in self.sequence(out):
            unacked.append(await publish(self.rt.app, send, list(send.headers)))
        await asyncio.gather(*unacked)  # the sequenced packets are in Kafka before the offsets may be committed
        if generation != gate.current():
            return  # revoked meanwhile: the next assignment starts from the committed offsets
        self.position.update(moved)
        for tp, end in moved.items():
            gate.handled(tp, end, generation)

    async def run(self, stream: Any) -> None:
        """The agent: batches of the inputs (waiting `batch_window_ms` once for more), sequenced in order."""
        self.streams[:] = [stream]
        settings = self.rt.settings
        async for events in batches(stream, settings.batch_max, settings.batch_window_ms / 1000.0):
            async with self.lock:
                await self.sequence_in_order(events)

    async def run_bulk(self, bootstrap: str, group: str, instance: str, topics: list[str], kwargs: dict[str, Any]) -> None:
        """EXPERIMENT: the inputs read in bulk by a consumer of the sequencer's own (no Faust stream)."""
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
        from aiokafka.structs import OffsetAndMetadata

        lock = self.lock

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                async with lock:
                    pass

            async def on_partitions_assigned(self, assigned: Any) -> None:
                return None

        settings = self.rt.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            group_instance_id=instance,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, settings.session_timeout_s / 3) * 1000),
            isolation_level="read_committed",
            **kwargs,
        )
        await consumer.start()
        consumer.subscribe(topics, listener=Listener())
        try:
            while True:
                data = await consumer.getmany(timeout_ms=200, max_records=settings.batch_max)
                if not data:
                    continue
                async with lock:
                    events = [Refetched(r) for tp in sorted(data, key=str) for r in data[tp]]
                    unacked = [await publish(self.rt.app, send, list(send.headers)) for send in self.sequence(events)]
                    await asyncio.gather(*unacked)
                    await consumer.commit(
                        {tp: OffsetAndMetadata(records[-1].offset + 1, "") for tp, records in data.items()}
                    )
        finally:
            await consumer.stop()

    async def watch(self) -> None:
        """Read what sits below an input partition's end while its stream brings nothing (see `CommitGate`)."""
        gate = self.rt.gate
        if not gate.ready():
            return
        busy = any(not stream.channel.empty() for stream in self.streams)
        mine = [tp for tp in self.rt.app.consumer.assignment() if tp.topic in self.by_kafka_name]
        positions = {tp: self.position.get(tp, gate.start(tp)) for tp in mine}
        due = gate.overdue("sequencer", positions, busy, WATCH_FILL_MAX)
        if due:
            async with self.lock:
                await self.sequence_in_order([], {tp: end for tp, end in due.items() if gate.ready()})
