"""CommitGate: a stream partition is committed only up to what its agent reported handled.

The gate sits on Faust's consumer; here a small stand-in carries exactly the consumer state the gate
reads and writes (Faust's ack lists, read marks, committed offsets), so its decisions are checked
without a broker. The crash tests (tests/integration/test_crash.py) run it against the real one.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from faust.types import TP

from streams.worker.commit import CommitGate

BARS = "t.market.bars"
OTHER = "app-__assignor-__leader"


class _Signal:
    def __init__(self) -> None:
        self.receivers: list[Any] = []

    def connect(self, fn: Any) -> None:
        self.receivers.append(fn)

    async def send(self) -> None:
        for fn in self.receivers:
            await fn()


class _Flow:
    active = True

    def is_active(self) -> bool:
        return self.active


class _Consumer:
    def __init__(self, committed: dict[TP, int | None], earliest: int = 0) -> None:
        self.committed = committed
        self.earliest = earliest
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._gap: dict[TP, Any] = {}
        self._read_offset: dict[TP, int | None] = {}
        self.sought: dict[TP, int] = {}
        self.ends: dict[TP, int] = {}

    async def seek_to_committed(self) -> dict[TP, int | None]:
        return dict(self.committed)

    def _new_offset(self, tp: TP) -> int | None:
        acked = sorted(self._acked[tp])
        return acked[-1] + 1 if acked else None  # Faust's own answer: past everything acked

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest for tp in tps}

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought[tp] = offset

    def assignment(self) -> set[TP]:
        return set(self.committed)

    def highwater(self, tp: TP) -> int:
        if tp not in self.committed:
            raise RuntimeError("not assigned")
        return self.ends[tp]


class _App:
    def __init__(self, consumer: _Consumer) -> None:
        self.consumer = consumer
        self.consumer_generation_id = 1
        self.flow_control = _Flow()
        self.on_partitions_revoked = _Signal()


def _gate(committed: dict[TP, int | None], earliest: int = 0) -> tuple[_App, CommitGate]:
    app = _App(_Consumer(committed, earliest))
    gate = CommitGate(app, {BARS})  # type: ignore[arg-type]
    asyncio.run(app.consumer.seek_to_committed())
    return app, gate


def test_offsets_faust_acked_past_a_skipped_message_when_committing_then_only_the_reported_position_counts() -> None:
    tp = TP(BARS, 0)
    app, gate = _gate({tp: 10})
    app.consumer._acked[tp] += [11, 12, 13]  # 10 was skipped by the stream, the rest acked
    assert app.consumer._new_offset(tp) is None  # nothing reported handled yet
    gate.handled(tp, 10, generation=1)
    assert app.consumer._new_offset(tp) == 10
    assert app.consumer._acked[tp] == []  # Faust's ack list no longer grows without bound


def test_handled_when_reported_from_an_older_generation_then_ignored() -> None:
    tp = TP(BARS, 0)
    app, gate = _gate({tp: 10})
    app.consumer_generation_id = 2
    gate.handled(tp, 15, generation=1)
    assert app.consumer._new_offset(tp) is None


def test_handled_when_positions_arrive_out_of_order_then_the_commit_never_moves_back() -> None:
    tp = TP(BARS, 0)
    app, gate = _gate({tp: 0})
    gate.handled(tp, 20, generation=1)
    gate.handled(tp, 12, generation=1)
    assert app.consumer._new_offset(tp) == 20


def test_unmanaged_topic_when_committing_then_faust_decides_as_before() -> None:
    tp = TP(OTHER, 0)
    app, _ = _gate({tp: 3})
    app.consumer._acked[tp] += [3, 4]
    assert app.consumer._new_offset(tp) == 5


def test_seek_when_partition_never_committed_then_rewound_to_its_first_offset_and_read_marks_reset() -> None:
    fresh, known = TP(BARS, 0), TP(BARS, 1)
    app = _App(_Consumer({fresh: None, known: 7}, earliest=4))
    app.consumer._read_offset = {fresh: 50, known: 90}  # marks from before the rebalance
    gate = CommitGate(app, {BARS})  # type: ignore[arg-type]
    assert gate.start(fresh) is None  # not sought yet in this generation
    asyncio.run(app.consumer.seek_to_committed())
    assert app.consumer.sought == {fresh: 4}
    assert gate.start(fresh) == 4 and gate.start(known) == 7
    assert app.consumer._read_offset == {fresh: None, known: 7}


def test_start_when_a_rebalance_follows_the_seek_then_unknown_until_sought_again() -> None:
    tp = TP(BARS, 0)
    app, gate = _gate({tp: 7})
    gate.handled(tp, 9, generation=1)
    asyncio.run(app.on_partitions_revoked.send())
    app.consumer_generation_id = 2
    assert gate.start(tp) is None and not gate.ready()
    assert app.consumer._new_offset(tp) is None
    asyncio.run(app.consumer.seek_to_committed())
    assert gate.start(tp) == 7 and gate.ready()


def test_watchdog_when_position_below_end_and_unmoved_for_a_tick_then_stalled() -> None:
    tp = TP(BARS, 0)
    _, gate = _gate({tp: 0})
    assert not gate.stalled("k", 5, 9)  # first sight: give the stream a tick
    assert gate.stalled("k", 5, 9)
    assert not gate.stalled("k", 6, 9)  # it moved
    assert not gate.stalled("k", 9, 9)  # nothing below the end
    assert not gate.stalled("k", 9, 9)
    assert not gate.stalled("k", 3, None)  # end unknown


def test_end_when_partition_not_assigned_then_unknown() -> None:
    tp = TP(BARS, 0)
    app, gate = _gate({tp: 0})
    app.consumer.ends[tp] = 12
    assert gate.end(tp) == 12
    assert gate.end(TP(BARS, 5)) is None


def test_watchdog_when_the_agent_has_messages_waiting_then_slow_not_stalled() -> None:
    tp = TP(BARS, 0)
    _, gate = _gate({tp: 0})
    assert not gate.stalled("k", 5, 9, busy=True)
    assert not gate.stalled("k", 5, 9, busy=True)  # unmoved, but its stream still has work queued
    assert not gate.stalled("k", 5, 9)  # the queue ran dry: one tick more before reading past it
    assert gate.stalled("k", 5, 9)


def test_overdue_when_a_partition_stays_below_its_end_then_read_up_to_the_end_at_most_the_limit() -> None:
    near, far, unknown = TP(BARS, 0), TP(BARS, 1), TP(BARS, 2)
    app, gate = _gate({near: 0, far: 0, unknown: 0})
    app.consumer.ends.update({near: 10, far: 90_000, unknown: 5})
    positions: dict[TP, int | None] = {near: 4, far: 0, unknown: None}
    assert gate.overdue("k", positions, busy=False, most=5_000) == {}  # first sight
    assert gate.overdue("k", positions, busy=False, most=5_000) == {near: 10, far: 5_000}
