"""The level chain: Levels 1, 3 and 4 of a partition back to back in memory, each with its own Table.

One agent reads a partition of the sequenced log (SPEC §2: after it, nothing crosses Kafka before
the decision) and runs each item through the account, symbol and portfolio stages of
`streams.core` — the `Chain` `riskguard replay` runs after Level 2 — with failures contained (an
item a level raises on is dead-lettered, the account fails closed). Each level keeps its own Table
(`level-account`, `level-symbol`, `level-portfolio`; own changelog), its own metrics and log name;
the shell (`PartitionedAgent`) stores exactly the keys each level reports touched, and one marker,
written last in the portfolio table, makes the batch one crash-safe unit across the three.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import faust

from schemas.config import Config
from schemas.outputs import DeadLetterSource
from streams.core.engine import CHAIN_LEVELS, Chain, partition_chain
from streams.core.items import Item
from streams.core.snapshot import DUMPERS, LOADERS
from streams.topology import read_packet
from streams.worker.commit import durable_table
from streams.worker.outputs import OUTPUT_TOPICS, Outputs
from streams.worker.partitioned import Applied, PartitionedAgent, Record, Runtime, oldest_t0


def packet_items(raw: bytes) -> tuple[list[Item], str | None]:
    """The items of a `risk.sequenced` packet, or none and why it cannot be read (never raised: SPEC §8)."""
    try:
        return read_packet(raw), None
    except Exception as exc:
        return [], f"sequenced: {type(exc).__name__}: {exc}"[:2000]


class LevelChain(PartitionedAgent):
    """Levels 1, 3 and 4 of each partition of the sequenced log, one table each."""

    name = "chain"

    def __init__(
        self, runtime: Runtime, config: Config, source: faust.TopicT, outputs: Outputs, output_names: dict[str, str]
    ) -> None:
        app = runtime.app
        tables = {level: durable_table(app, f"level-{level}") for level in CHAIN_LEVELS}
        super().__init__(runtime, source, tables, CHAIN_LEVELS[-1], tuple(output_names[name] for name in OUTPUT_TOPICS))
        self.config = config
        self.outputs = outputs

    def restore(self, partition: int, values: dict[str, dict[str, Any]]) -> Chain:
        chain = partition_chain(self.config)
        for level, stage in zip(CHAIN_LEVELS, chain.stages, strict=True):
            for key in sorted(values[level]):
                LOADERS[level](stage, key, values[level][key])
        return chain

    def stages_of(self, partition: int) -> dict[str, Any]:
        """The level stages of a partition (the web views read them)."""
        chain: Chain = self.state_for(partition)
        return dict(zip(CHAIN_LEVELS, chain.stages, strict=True))

    def apply(self, partition: int, state: Any, records: list[Record]) -> Applied:
        chain: Chain = state
        touched: dict[str, set[str]] = {}
        sends = []
        oldest: int | None = None
        before = [Counter(stage.stats) for stage in chain.stages]
        for record in records:
            offset = record.offset
            oldest = oldest_t0(record.headers, oldest)
            items, error = packet_items(record.value)
            if error is not None:  # not as our sequencer writes it: dead-lettered, the partition goes on
                source = DeadLetterSource(topic=self.topic_name, partition=partition, offset=offset)
                sends.append(self.outputs.rejected("sequenced", source, record.key, record.value, error, ()))
                continue
            for index, item in enumerate(items):
                result = chain.run([item], 0, touched)
                tag = f"chain|{partition}|{offset}.{index}"
                for j, output in enumerate(result.outputs):
                    sends.append(self.outputs.send(output, partition, f"{tag}|{j}".encode(), oldest))
                for j, failure in enumerate(result.failures):
                    source = DeadLetterSource(topic=self.topic_name, partition=partition, offset=offset)
                    sends.append(self.outputs.failure(failure, source, partition, f"{tag}|f{j}".encode()))
        for level, stage, counts in zip(CHAIN_LEVELS, chain.stages, before, strict=True):
            self.rt.metrics.stage_counts(level, Counter(stage.stats) - counts)
        return Applied(sends, touched)

    def dump(self, state: Any, table: str, keys: set[str]) -> dict[str, Any]:
        chain: Chain = state
        stage = chain.stages[CHAIN_LEVELS.index(table)]
        return DUMPERS[table](stage, keys)
