"""Topic names and the item wire format shared by the Faust agents, publish and record (SPEC §2).

Internal, account-keyed topics carry the guard's ordered log between levels:
`risk.sequenced` (the recordable per-account sequence written by the first stage) ->
`risk.level2` -> `risk.level1` -> `risk.level3`; Level 4 writes the output topics.
Partition-wide items (bars, cluster maps) are copied to every partition.
"""

from __future__ import annotations

from collections.abc import Sequence
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
SRC_HEADER = "rg-src"  # on outputs: `level|partition|tag|index`, what a restarted level checks before resending

Tag = tuple[int, ...]
"""Where an item comes from: the `risk.sequenced` offset, the item's index in that packet, then one index per
level that forwarded it. Deterministic (a level that redoes a batch after a crash forwards the same items with
the same tags) and increasing along each partition's log, so a level skips any tag at or below the last it applied.
"""


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


def encode_item(item: Item, tag: Tag | None = None) -> bytes:
    """An item between levels as JSON bytes (with its tag when a level forwards it)."""
    event = item.event.model_dump(mode="json") if item.event is not None else None
    data: dict[str, Any] = {"kind": item.kind, "account": item.account, "event": event, "notes": item.notes}
    if tag is not None:
        data["tag"] = list(tag)
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


def encode_packets(items: Sequence[Item], limit: int = PACKET_BYTES, tags: Sequence[Tag] | None = None) -> list[bytes]:
    """Consecutive items of one partition as few messages as fit `limit` bytes each: `{"items": [...]}`.

    A packet is only framing: its items are read back in order, one by one, exactly as if each had
    been a message of its own, so the partition's log is the same sequence either way.
    """
    packets: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for n, item in enumerate(items):
        raw = encode_item(item, tags[n] if tags is not None else None)
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
    return [item for _, item in decode_tagged(raw, 0)]


def decode_tagged(raw: bytes, offset: int) -> list[tuple[Tag, Item]]:
    """The items of a packet at `offset` with their tags; an untagged item (from the sequencer) is `(offset, index)`."""
    data: dict[str, Any] = orjson.loads(raw)
    entries = data.get("items", [data])
    return [(tuple(e["tag"]) if "tag" in e else (offset, index), _item(e)) for index, e in enumerate(entries)]
