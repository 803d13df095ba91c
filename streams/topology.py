"""Topic names and the item wire format shared by the Faust agents, publish and record (SPEC §2).

Internal, account-keyed topics carry the guard's ordered log between levels:
`risk.sequenced` (the recordable per-account sequence written by the first stage) ->
`risk.level2` -> `risk.level1` -> `risk.level3`; Level 4 writes the output topics.
Partition-wide items (bars, cluster maps) are copied to every partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from schemas.config import KafkaSettings
from schemas.inputs import INPUT_MODELS
from streams.core.stages import Item

LOGICAL_TOPICS = {
    "bars": "market.bars",
    "fills": "exec.fills",
    "signals": "strategy.signals",
    "equity": "account.equity",
    "control": "risk.control",
    "decisions": "risk.decisions",
    "halts": "risk.halts",
    "events": "risk.events",
    "rebalance_runs": "risk.rebalance-runs",
    "deadletter": "risk.deadletter",
}
INTERNAL_TOPICS = {
    "sequenced": "risk.sequenced",
    "level2": "risk.level2",
    "level1": "risk.level1",
    "level3": "risk.level3",
}
_EVENT_TOPIC = {"bar": "bars", "fill": "fills", "signal": "signals", "equity": "equity", "control": "control"}
SEQ_HEADER = "rg-seq"


@dataclass(frozen=True)
class Topics:
    """Kafka topic names for one deployment (prefix from config)."""

    prefix: str = ""

    @classmethod
    def from_settings(cls, settings: KafkaSettings) -> Topics:
        return cls(settings.topic_prefix)

    def name(self, logical: str) -> str:
        base = LOGICAL_TOPICS.get(logical) or INTERNAL_TOPICS[logical]
        return f"{self.prefix}{base}"

    def logical(self, kafka_topic: str) -> str | None:
        for logical in (*LOGICAL_TOPICS, *INTERNAL_TOPICS):
            if self.name(logical) == kafka_topic:
                return logical
        return None


def encode_item(item: Item) -> bytes:
    """An item between levels as JSON bytes."""
    event = item.event.model_dump(mode="json") if item.event is not None else None
    return orjson.dumps({"kind": item.kind, "account": item.account, "event": event, "notes": item.notes})


def decode_item(raw: bytes) -> Item:
    """Rebuild an item written by `encode_item` (the event is validated again)."""
    data: dict[str, Any] = orjson.loads(raw)
    kind = data["kind"]
    event = data["event"]
    if event is not None:
        event = INPUT_MODELS[_EVENT_TOPIC[kind]].model_validate(event)
    return Item(kind, data["account"], event, data["notes"])
