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
from streams.topology import SEQ_HEADER, encode_packets
from streams.worker.commit import durable_table
from streams.worker.outputs import Outputs
from streams.worker.partitioned import T0_HEADER, Applied, PartitionedAgent, Record, Runtime, Send


class MarketAgent(PartitionedAgent):
    """Level 2 on the one partition of `market.bars`; bars with their notes go on to `risk.market`."""

    name = "market"

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
        """Level 2 on each bar of the batch; the bars it forwards go on together, as one run of packets.

        One packet per batch, not one message per bar: the sequencer then handles a batch of bars as one
        event. The packets' markers name the batch's first and last offsets, and they carry every
        ordered publisher's sequence number of the batch (of a forwarded bar or of a dropped one alike).
        """
        chain: Chain = state
        sends: list[Send] = []
        forwarded: list[Item] = []
        seqs: list[tuple[str, bytes]] = []
        oldest: int | None = None
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
            if result.forwarded or seq:  # a dropped bar's sequence number still passes, as a dead letter's would
                forwarded += result.forwarded
                seqs += seq
                oldest = record.timestamp_ms if oldest is None else min(oldest, record.timestamp_ms)
        if oldest is not None:
            span = f"market|{partition}|{records[0].offset}-{records[-1].offset}"
            headers = (*seqs, (T0_HEADER, str(oldest).encode()))
            for k, packet in enumerate(encode_packets(forwarded) or [b'{"items":[]}']):
                sends.append(Send(self.sink, None, packet, 0, f"{span}|p{k}".encode(), headers if k == 0 else ()))
        after = chain.stages[0].stats
        delta = {k: after[k] - before.get(k, 0) for k in after}
        self.rt.metrics.stage_counts("market", delta)
        return Applied(sends, {"market": set()})

    def dump(self, state: Any, table: str, keys: set[str]) -> dict[str, Any]:
        chain: Chain = state
        return DUMPERS["market"](chain.stages[0])
