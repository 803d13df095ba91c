"""Topic names and the item wire format shared by the Faust agents, publish and record (SPEC §2).

One internal, account-keyed topic carries the guard's ordered log: `risk.sequenced`, the recordable
per-account sequence the sequencer writes and the level chain of each partition reads (SPEC §2: a
signal crosses Kafka twice). Partition-wide items (bars with Level 2's notes, cluster maps) are copied
to every partition. In front of the sequencer, `risk.market` (one partition) carries the bars the
market agent has run through Level 2, once per bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.config import KafkaSettings
from schemas.inputs import INPUT_MODELS
from streams.core.items import Item

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
INTERNAL_TOPICS = {"market": "risk.market", "sequenced": "risk.sequenced"}
_EVENT_TOPIC = {"bar": "bars", "fill": "fills", "signal": "signals", "equity": "equity", "control": "control"}
SEQ_HEADER = "rg-seq"
SRC_HEADER = "rg-src"  # `agent|partition|offset.item|index`: what an agent redoing a batch checks before resending


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
    """An item of the sequenced log (or of `risk.market`) as JSON bytes."""
    event = item.event.model_dump(mode="json") if item.event is not None else None
    data: dict[str, Any] = {"kind": item.kind, "account": item.account, "event": event, "notes": item.notes}
    return orjson.dumps(data)


def decode_item(raw: bytes) -> Item:
    """Rebuild an item written by `encode_item` (the event is validated again)."""
    return _item(orjson.loads(raw))


def _item(data: dict[str, Any]) -> Item:
    kind = data["kind"]
    event = data["event"]
    if event is not None:
        event = INPUT_MODELS[_EVENT_TOPIC[kind]].model_validate(event)
    return Item(kind, data["account"], event, data["notes"])


PACKET_BYTES = 512 * 1024  # well under the producer's request size and the broker's 4 MiB message limit


def encode_packets(items: Sequence[Item], limit: int = PACKET_BYTES) -> list[bytes]:
    """Consecutive items of one partition as few messages as fit `limit` bytes each: `{"items": [...]}`.

    A packet is only framing: its items are read back in order, one by one, exactly as if each had
    been a message of its own, so the partition's log is the same sequence either way.
    """
    packets: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for item in items:
        raw = encode_item(item)
        if parts and size + len(raw) > limit:
            packets.append(b'{"items":[' + b",".join(parts) + b"]}")
            parts, size = [], 0
        parts.append(raw)
        size += len(raw) + 1
    if parts:
        packets.append(b'{"items":[' + b",".join(parts) + b"]}")
    return packets


def decode_packet(raw: bytes) -> list[Item]:
    """The items of a packet (or of a single-item message, the older framing)."""
    data: dict[str, Any] = orjson.loads(raw)
    return [_item(entry) for entry in data.get("items", [data])]
