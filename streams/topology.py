"""Topic names and the item wire format shared by the Faust agents, publish and record (SPEC §2).

One internal, account-keyed topic carries the guard's ordered log: `risk.sequenced`, the recordable
per-account sequence the sequencer writes and the level chain of each partition reads (SPEC §2: a
signal crosses Kafka twice). Partition-wide items (bars with Level 2's notes, cluster maps) are copied
to every partition. In front of the sequencer, `risk.market` (one partition) carries the bars the
market agent has run through Level 2, as packets (one run per batch of `market.bars`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from schemas.config import KafkaSettings
from schemas.inputs import INPUT_MODELS, Command, Direction, Side
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
    """An item of the sequenced log (or of `risk.market`) as JSON bytes.

    The event is the validated input model's fields as they are in memory (times as epoch ms, enums by
    value), so that a reader that trusts the log (the level chain) rebuilds it without validating again.
    """
    event = item.event.model_dump() if item.event is not None else None
    data: dict[str, Any] = {"kind": item.kind, "account": item.account, "event": event, "notes": item.notes}
    return orjson.dumps(data)


def decode_item(raw: bytes) -> Item:
    """Rebuild an item written by `encode_item`, validating its event again (for readers of a log they do not trust)."""
    return _item(orjson.loads(raw))


def _item(data: dict[str, Any]) -> Item:
    kind = data["kind"]
    event = data["event"]
    if event is not None:
        event = INPUT_MODELS[_EVENT_TOPIC[kind]].model_validate(event)
    return Item(kind, data["account"], event, data["notes"])


_ENUMS: dict[str, tuple[tuple[str, type[StrEnum]], ...]] = {
    "fill": (("side", Side),),
    "signal": (("direction", Direction),),
    "control": (("command", Command),),
}


_TIMES = ("ts", "expires_at")


def _trusted_item(data: dict[str, Any]) -> Item:
    """An item of a log the sequencer wrote: its event was validated there, so it is only constructed here.

    The sequencer validates each input once (SPEC §8); re-validating every item at every reader cost more
    than the levels themselves. Only the enum fields need their type back; everything else is stored as
    the model holds it.
    """
    kind = data["kind"]
    event = data["event"]
    if event is not None and not all(type(event.get(name, 0)) is int for name in _TIMES):
        return _item(data)  # written before events were stored as validated (ISO times): validate it
    if event is not None:
        for name, enum in _ENUMS.get(kind, ()):
            if event.get(name) is not None:
                event[name] = enum(event[name])
        event = INPUT_MODELS[_EVENT_TOPIC[kind]].model_construct(**event)
    return Item(kind, data["account"], event, data["notes"])


PACKET_BYTES = 512 * 1024  # well under the producer's request size and the broker's 4 MiB message limit


def encode_packets(items: Sequence[Item], limit: int = PACKET_BYTES) -> list[bytes]:
    """Consecutive items of one partition as few messages as fit `limit` bytes each: `{"items": [...]}`.

    A packet is only framing: its items are read back in order, one by one, exactly as if each had
    been a message of its own, so the partition's log is the same sequence either way.
    """
    return pack([encode_item(item) for item in items], limit)


_PACKET_HEAD = b'{"items":['
_PACKET_TAIL = b"]}"


def pack(parts: Sequence[bytes], limit: int = PACKET_BYTES) -> list[bytes]:
    """Encoded items (or runs of them, comma-joined, as `packet_body` gives) as packets of at most ~`limit` bytes."""
    packets: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for raw in parts:
        if not raw:
            continue
        if chunk and size + len(raw) > limit:
            packets.append(_PACKET_HEAD + b",".join(chunk) + _PACKET_TAIL)
            chunk, size = [], 0
        chunk.append(raw)
        size += len(raw) + 1
    if chunk:
        packets.append(_PACKET_HEAD + b",".join(chunk) + _PACKET_TAIL)
    return packets


def packet_body(raw: bytes) -> bytes | None:
    """The comma-joined items of a packet `pack` wrote (b"" when empty), to copy into another packet unparsed;
    None when `raw` is not framed that way."""
    if raw.startswith(_PACKET_HEAD) and raw.endswith(_PACKET_TAIL):
        return raw[len(_PACKET_HEAD) : -len(_PACKET_TAIL)]
    return None


def decode_packet(raw: bytes) -> list[Item]:
    """The items of a packet (or of a single-item message, the older framing), each event validated again."""
    data: dict[str, Any] = orjson.loads(raw)
    return [_item(entry) for entry in data.get("items", [data])]


def read_packet(raw: bytes) -> list[Item]:
    """The items of a packet of the sequenced log, trusted: the sequencer validated every event once."""
    data: dict[str, Any] = orjson.loads(raw)
    return [_trusted_item(entry) for entry in data.get("items", [data])]


def partition_for(account: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key), so keyed tools agree with the sequencer."""
    # Imported here: `riskguard replay` reads this module and should not load the Kafka client for it.
    from aiokafka.partitioner import murmur2

    return int((murmur2(account.encode()) & 0x7FFFFFFF) % partitions)
