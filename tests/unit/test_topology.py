"""The sequenced log's wire format (streams.topology): validated once by the sequencer, read back as it was."""

from __future__ import annotations

import orjson
import pytest

from schemas.inputs import INPUT_MODELS
from streams.asyncapi import _examples
from streams.core.items import Item, item_for
from streams.topology import Topics, decode_packet, encode_packets, pack, packet_body, read_packet

LOGICAL = ("bars", "fills", "signals", "equity", "control")


def _items() -> list[Item]:
    examples = _examples(Topics())
    items = [item_for(name, INPUT_MODELS[name].model_validate(examples[name][3])) for name in LOGICAL]
    items[0].notes["market"] = {"close": 150.0, "atr": 2.5}  # what Level 2 adds to a bar
    return [*items, Item("cluster_map", None, None, {"assignment": {"NVDA": 0, "AMD": 0}})]


@pytest.mark.parametrize("index", range(len(LOGICAL) + 1))
def test_item_when_read_trusted_then_equal_to_the_validated_read_and_same_types(index: int) -> None:
    (packet,) = encode_packets([_items()[index]])

    (trusted,) = read_packet(packet)
    (validated,) = decode_packet(packet)

    assert trusted == validated == _items()[index]
    if trusted.event is not None:
        assert type(trusted.event) is type(validated.event)
        for name, field_value in validated.event:
            assert type(getattr(trusted.event, name)) is type(field_value), name  # enums are enums again


def test_packet_body_when_copied_into_another_packet_then_the_same_items_in_order() -> None:
    items = _items()
    first, second = encode_packets(items[:3]), encode_packets(items[3:])

    merged = pack([packet_body(first[0]) or b"", packet_body(second[0]) or b""])

    assert [read_packet(p) for p in merged] == [items]
    assert packet_body(b'{"items":[]}') == b""
    assert packet_body(orjson.dumps({"kind": "bar"})) is None  # not a packet: read it the slow way


def test_pack_when_over_the_limit_then_split_between_items_never_inside_one() -> None:
    items = _items()
    parts = [orjson.dumps(i) for i in [1, 2]]  # placeholders are not items: only framing is under test here
    assert pack(parts, limit=1) == [b'{"items":[1]}', b'{"items":[2]}']

    packets = encode_packets(items, limit=300)

    assert len(packets) > 1
    assert [item for packet in packets for item in read_packet(packet)] == items


def test_item_when_written_by_an_earlier_version_with_iso_times_then_read_validated() -> None:
    item = _items()[2]  # the signal
    assert item.event is not None
    old = {"kind": item.kind, "account": item.account, "event": item.event.model_dump(mode="json"), "notes": {}}
    assert isinstance(old["event"]["ts"], str)

    (read,) = read_packet(orjson.dumps({"items": [old]}))

    assert read == item and isinstance(read.event.ts if read.event else None, int)


def test_sequenced_record_when_not_a_packet_our_sequencer_wrote_then_an_error_to_dead_letter_not_raised() -> None:
    from streams.worker.chain import packet_items

    good = encode_packets(_items())[0]
    bad_enum = good.replace(b'"side":"BUY"', b'"side":"SIDEWAYS"')

    assert packet_items(good) == (_items(), None)
    for raw in (b"not json", b'{"items":[{"kind":"bar"}]}', bad_enum):
        items, error = packet_items(raw)
        assert items == [] and error is not None and error.startswith("sequenced: "), raw
