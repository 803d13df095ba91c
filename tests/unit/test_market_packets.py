"""The market agent's packets (streams.worker.market): whole records, and none sent twice after a crash."""

from __future__ import annotations

import itertools
from typing import Any

from schemas.inputs import Bar
from streams.core.items import Item
from streams.topology import SEQ_HEADER, encode_item, read_packet
from streams.worker.market import _covered, _Packets
from streams.worker.partitioned import T0_HEADER, Record


def _bar(offset: int, seq: int | None = None) -> tuple[Record, list[Item]]:
    bar = Bar(symbol=f"S{offset}", ts=1_700_000_000_000 + offset, open=10, high=11, low=9, close=10.5)
    headers = ((SEQ_HEADER, str(seq).encode()),) if seq is not None else ()
    return Record(offset, None, b"", headers, 1_000 + offset), [Item("bar", None, bar, {"atr": 1.0})]


def _run(packets: _Packets, offsets: list[int]) -> list[bool]:
    added = []
    for offset in offsets:
        record, items = _bar(offset, seq=offset)
        added.append(packets.add(record, items, tuple(h for h in record.headers if h[0] == SEQ_HEADER)))
    return added


def test_packets_when_a_batch_fits_then_one_packet_naming_its_offsets_with_every_sequence_number() -> None:
    packets = _Packets(sink=Any, partition=0, covered=[])  # type: ignore[arg-type]

    assert _run(packets, [10, 11, 12]) == [True, True, True]
    (send,) = packets.sends()

    assert send.marker == b"market|0|10-12|p"
    assert [item.bar.symbol for item in read_packet(send.value)] == ["S10", "S11", "S12"]
    assert [v for k, v in send.headers if k == SEQ_HEADER] == [b"10", b"11", b"12"]
    assert dict(send.headers)[T0_HEADER] == b"1010"


def test_packets_when_redone_with_other_boundaries_then_records_already_sent_are_left_out() -> None:
    seen = {b"market|0|10-12|p", b"market|0|10|0", b"market|1|13-20|p", b"other|0|13-14|p"}
    covered = _covered(seen, 0)
    packets = _Packets(sink=Any, partition=0, covered=covered)  # type: ignore[arg-type]

    assert covered == [(10, 12)]
    assert _run(packets, [10, 11, 12, 13, 14]) == [False, False, False, True, True]
    (send,) = packets.sends()
    assert send.marker == b"market|0|13-14|p"
    assert [item.bar.symbol for item in read_packet(send.value)] == ["S13", "S14"]


def test_packets_when_over_the_size_limit_then_split_between_records_each_naming_its_own() -> None:
    from streams.worker import market

    packets = _Packets(sink=Any, partition=0, covered=[])  # type: ignore[arg-type]
    one = len(encode_item(_bar(1)[1][0])) + 1
    saved = market.PACKET_BYTES
    market.PACKET_BYTES = 2 * one  # room for about two bars per packet
    try:
        _run(packets, [1, 2, 3, 4, 5])
        sends = packets.sends()
    finally:
        market.PACKET_BYTES = saved

    assert len(sends) > 1
    markers = [s.marker.decode().split("|")[2] for s in sends]
    covered = [(int(a), int(b)) for a, b in (m.split("-") for m in markers)]
    assert covered[0][0] == 1 and covered[-1][1] == 5
    assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(covered))
    for send, (first, last) in zip(sends, covered, strict=True):
        assert [item.bar.symbol for item in read_packet(send.value)] == [f"S{o}" for o in range(first, last + 1)]
        assert [int(v) for k, v in send.headers if k == SEQ_HEADER] == list(range(first, last + 1))
