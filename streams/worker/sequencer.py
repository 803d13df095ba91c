"""The sequencer: validate once, dead-letter bad input, write each partition's ordered log (SPEC §2, §7).

It reads the account topics (fills, signals, equity, control) and `risk.market` (bars with Level 2's
notes, from the market agent) in arrival order and writes `risk.sequenced`: each account's events to
the account's partition, each bar and cluster map to every partition, so that every partition of the
log is a complete, replayable sequence for its accounts. A message that is not valid input goes to
the dead letter with its origin (topic, partition, offset); a refused control also raises a
`security` event; nothing it reads can stop it.

The sequencer keeps no table: its progress is the offsets its own consumer commits once its packets are
in Kafka (`Sequencer.run`). A crash in between sequences those inputs again; the levels drop what they
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
from streams.worker.commit import Refetched
from streams.worker.outputs import Outputs
from streams.worker.partitioned import T0_HEADER, Runtime, Send, oldest_t0, record_of
from streams.worker.settings import partition_for

log = structlog.get_logger("riskguard.worker")

ControlCheck = Callable[[dict[str, Any]], str | None]


def merge_fetches(first: dict[Any, list[Any]], more: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
    """Two fetches of one consumer as one: per partition, the second's records after the first's."""
    merged = {tp: list(records) for tp, records in first.items()}
    for tp, records in more.items():
        merged.setdefault(tp, []).extend(records)
    return merged


class Sequencer:
    """The sequencer: its consumer and producer, and how it turns input records into sequenced packets."""

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
        self.lock = asyncio.Lock()  # a batch and a rebalance take turns
        self.consumer: Any = None
        self.next_offsets: dict[Any, int] = {}  # per input partition: the next offset to sequence (lag)

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

    def lags(self) -> list[tuple[str, int, int]]:
        """(topic, partition, lag) of the input partitions this worker's sequencer holds: high-water - next."""
        consumer = self.consumer
        if consumer is None:
            return []
        lags: list[tuple[str, int, int]] = []
        for tp in sorted(consumer.assignment()):
            high, at = consumer.highwater(tp), self.next_offsets.get(tp)
            if high is not None and at is not None:
                lags.append((tp.topic, tp.partition, max(int(high) - at, 0)))
        return lags

    async def run(self, bootstrap: str, group: str, instance: str, topics: list[str], kwargs: dict[str, Any]) -> None:
        """The sequencer: its inputs read in bulk by a consumer of its own, sequenced, committed once in Kafka.

        Faust's per-event stream cost ~110 µs a message before any work; the inputs are the worker's
        busiest topics (every signal). The sequencer keeps no table, so it needs none of Faust's
        co-partitioning: its consumer is in a group of its own (`<app id>-sequencer`, a static member),
        its producer is its own (idempotent, not transactional: the levels drop what a redelivery repeats),
        and a batch's offsets are committed only once its packets are acked. A failed batch (the broker
        away) is read again from the committed offsets; nothing it reads can stop it (SPEC §8).
        """
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
        from aiokafka.structs import OffsetAndMetadata

        lock = self.lock
        next_offsets = self.next_offsets

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                async with lock:  # a batch in hand is finished and committed before the partitions go
                    for tp in revoked:
                        next_offsets.pop(tp, None)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                return None

        settings = self.rt.settings
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            max_request_size=4 * 1024 * 1024,
            **kwargs,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            group_instance_id=instance,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, settings.session_timeout_s / 3) * 1000),
            isolation_level="read_committed",
            fetch_max_wait_ms=settings.fetch_max_wait_ms,  # as the agents' consumer (`faust_compat.fetch_wait`)
            **kwargs,
        )
        await producer.start()
        await consumer.start()
        self.consumer = consumer
        consumer.subscribe(topics, listener=Listener())
        try:
            crowd = False  # the previous batch had more than one record
            while True:
                try:
                    data = await consumer.getmany(timeout_ms=200, max_records=settings.batch_max)
                    count = sum(len(records) for records in data.values())
                    if data and crowd and settings.batch_window_ms > 0 and count < settings.batch_max:
                        # records come together: wait once, up to the batch window, for more (throughput);
                        # after a lone record none is waited for (an idle desk's decision is not held)
                        more = await consumer.getmany(
                            timeout_ms=int(settings.batch_window_ms), max_records=settings.batch_max - count
                        )
                        data = merge_fetches(data, more)
                    crowd = count > 1
                    if data:
                        async with lock:
                            await self._batch(consumer, producer, data, OffsetAndMetadata)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the broker away, a commit refused after a rebalance: read again
                    log.warning("sequencer_batch_failed", error=repr(exc))
                    self.rt.metrics.level_error("sequencer")
                    await asyncio.sleep(1.0)
                    try:
                        await consumer.seek_to_committed()
                    except Exception as again:
                        log.warning("sequencer_seek_failed", error=repr(again))
        finally:
            self.consumer = None
            await consumer.stop()
            await producer.stop()

    async def _batch(self, consumer: Any, producer: Any, data: dict[Any, list[Any]], offset_type: Any) -> None:
        events = [Refetched(r) for tp in sorted(data, key=str) for r in data[tp]]
        unacked = []
        for send in self.sequence(events):
            unacked.append(
                await producer.send(
                    send.topic.get_topic_name(),
                    send.value,
                    key=send.key,
                    partition=send.partition,
                    headers=list(send.headers),
                )
            )
            if send.on_sent is not None:
                send.on_sent()
        await asyncio.gather(*unacked)  # the packets are in Kafka before the offsets are committed
        ends = {tp: records[-1].offset + 1 for tp, records in data.items() if records}
        await consumer.commit({tp: offset_type(end, "") for tp, end in ends.items()})
        self.next_offsets.update(ends)
