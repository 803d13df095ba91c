"""Level 2 once per market: one agent on `market.bars` computes prices, ATR, clusters and the regime.

SPEC §6.2 makes Level 2 market-wide, so it runs once per bar, not once per partition: this agent
validates each bar (a bad one is dead-lettered with its origin), runs the `MarketStage` of
`streams.core` (the same one `riskguard replay` runs) with its own Table (`level-market`, one
partition like `market.bars`), publishes the market's events (cluster maps, regime readings,
correlation spikes) once, and sends each bar with its market notes, and any new cluster map, to
`risk.market`, from where the sequencer copies them into every partition of the sequenced log. A
recorded partition of that log therefore replays with nothing else (SPEC §7).
"""

from __future__ import annotations

from typing import Any

import faust

from schemas.config import Config
from schemas.outputs import DeadLetterSource
from streams.core.engine import Chain
from streams.core.items import Item, item_for
from streams.core.levels.market.stage import MarketStage
from streams.core.snapshot import DUMPERS, LOADERS
from streams.tape import BadMessage, decode_value, load_json
from streams.topology import PACKET_BYTES, SEQ_HEADER, encode_item, pack
from streams.worker.commit import durable_table
from streams.worker.outputs import Outputs
from streams.worker.partitioned import T0_HEADER, Applied, PartitionedAgent, Record, Runtime, Send


class MarketAgent(PartitionedAgent):
    """Level 2 on the one partition of `market.bars`; bars with their notes go on to `risk.market`."""

    name = "market"
    gathers = True  # bars come as a burst at each bar time

    def __init__(
        self,
        runtime: Runtime,
        config: Config,
        source: faust.TopicT,
        sink: faust.TopicT,
        outputs: Outputs,
        sent_topics: tuple[str, ...],
    ) -> None:
        table = durable_table(runtime.app, "level-market", partitions=1)
        super().__init__(runtime, source, {"market": table}, "market", sent_topics)
        self.config = config
        self.sink = sink
        self.outputs = outputs
        self._ranges: dict[int, tuple[set[bytes], list[tuple[int, int]]]] = {}

    def restore(self, partition: int, values: dict[str, dict[str, Any]]) -> Chain:
        stage = MarketStage(self.config)
        for key in sorted(values["market"]):
            LOADERS["market"](stage, key, values["market"][key])
        return Chain([stage], ("market",))

    def stage(self) -> MarketStage:
        """Level 2's stage (partition 0 of `market.bars`)."""
        chain: Chain = self.state_for(0)
        stage = chain.stages[0]
        assert isinstance(stage, MarketStage)  # noqa: S101 - the market agent's chain is Level 2 alone
        return stage

    def apply(self, partition: int, state: Any, records: list[Record]) -> Applied:
        """Level 2 on each bar of the batch; the bars it forwards go on together, as few packets as fit.

        One run of packets per batch, not one message per bar: the sequencer then handles a batch of
        bars as one event. A record's items stay in one packet, and each packet's marker names the
        first and last offsets whose items (and ordered-publish sequence numbers, of a forwarded bar or
        of a dropped one alike) it carries. A batch redone after a crash, with other boundaries, leaves
        out every record a packet already in `risk.market` covers, so no bar or cluster map is sent twice.
        """
        chain: Chain = state
        sends: list[Send] = []
        packets = _Packets(self.sink, partition, self._covered_for(partition))
        before = dict(chain.stages[0].stats)
        for record in records:
            source = DeadLetterSource(topic=self.topic_name, partition=partition, offset=record.offset)
            seq = tuple(h for h in record.headers if h[0] == SEQ_HEADER)
            try:
                item = item_for("bars", decode_value("bars", load_json(record.value)))
            except BadMessage as exc:
                sends.append(self.outputs.rejected("bars", source, record.key, record.value, str(exc), seq))
                continue
            result = chain.run([item])
            tag = f"market|{partition}|{record.offset}"
            for j, output in enumerate(result.outputs):
                sends.append(self.outputs.send(output, 0, f"{tag}|{j}".encode()))
            for j, failure in enumerate(result.failures):
                sends.append(self.outputs.failure(failure, source, 0, f"{tag}|f{j}".encode()))
            # a dropped bar's sequence number still passes, as a dead letter's would
            if (result.forwarded or seq) and not packets.add(record, result.forwarded, seq):
                self.rt.metrics.duplicate(self.name)  # in a packet sent before a crash
        sends += packets.sends()
        after = chain.stages[0].stats
        delta = {k: after[k] - before.get(k, 0) for k in after}
        self.rt.metrics.stage_counts("market", delta)
        return Applied(sends, {"market": set()})

    def _covered_for(self, partition: int) -> list[tuple[int, int]]:
        """The offset ranges sent packets cover above the partition's last marker (the batches a takeover
        may redo), parsed once per takeover: the markers read back can number tens of thousands."""
        seen = self.sent.get(partition, set())
        cached = self._ranges.get(partition)
        if cached is None or cached[0] is not seen:
            floor = self.durable.get(partition, -1)
            cached = self._ranges[partition] = (seen, sorted(r for r in _covered(seen, partition) if r[1] > floor))
        return cached[1]

    def dump(self, state: Any, table: str, keys: set[str]) -> dict[str, Any]:
        chain: Chain = state
        return DUMPERS["market"](chain.stages[0])


def _covered(seen: set[bytes], partition: int) -> list[tuple[int, int]]:
    """The offset ranges of `risk.market` packets already sent, from their markers (`market|p|a-b|k`)."""
    prefix = f"market|{partition}|".encode()
    ranges: list[tuple[int, int]] = []
    for marker in seen:
        if marker.startswith(prefix):
            span = marker[len(prefix) :].split(b"|", 1)[0]
            first, _, last = span.partition(b"-")
            if first.isdigit() and last.isdigit():
                ranges.append((int(first), int(last)))
    return ranges


class _Packets:
    """The market agent's packets of one batch: whole records, at most ~`PACKET_BYTES` each."""

    def __init__(self, sink: faust.TopicT, partition: int, covered: list[tuple[int, int]]) -> None:
        self.sink = sink
        self.partition = partition
        self.covered = covered
        self.done: list[Send] = []
        self._reset()

    def _reset(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.first: int | None = None
        self.last = 0
        self.seqs: list[tuple[str, bytes]] = []
        self.oldest: int | None = None

    def add(self, record: Record, items: list[Item], seq: tuple[tuple[str, bytes], ...]) -> bool:
        """Add a record's items and sequence numbers; False when a packet already sent covers the record."""
        if any(first <= record.offset <= last for first, last in self.covered):
            return False
        parts = [encode_item(item) for item in items]
        size = sum(len(part) + 1 for part in parts)
        if self.first is not None and self.size + size > PACKET_BYTES:
            self._close()
        if self.first is None:
            self.first = record.offset
        self.parts += parts
        self.size += size
        self.last = record.offset
        self.seqs += seq
        self.oldest = record.timestamp_ms if self.oldest is None else min(self.oldest, record.timestamp_ms)
        return True

    def _close(self) -> None:
        if self.first is None:
            return
        (packet,) = pack(self.parts, limit=max(self.size, PACKET_BYTES)) or [b'{"items":[]}']
        marker = f"market|{self.partition}|{self.first}-{self.last}|p".encode()
        headers = (*self.seqs, (T0_HEADER, str(self.oldest).encode()))
        self.done.append(Send(self.sink, None, packet, 0, marker, headers))
        self._reset()

    def sends(self) -> list[Send]:
        """The packets, the last one closed."""
        self._close()
        return self.done
