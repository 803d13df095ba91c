"""Pending quantities of a position (streams.core.positions): the cached sum always equals a fresh one."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.positions import Ledger, Position, add_pending, apply_fill


def _fresh_sum(position: Position, ts: int) -> float:
    return sum(p.qty for p in position.pending.values() if p.expires_at > ts)


def test_pending_qty_when_an_entry_expires_between_reads_then_it_is_dropped_from_the_cached_sum() -> None:
    position = Position()
    add_pending(position, "d1", 10.0, expires_at=100)
    add_pending(position, "d2", -4.0, expires_at=200)

    assert position.pending_qty(50) == 6.0
    assert position.pending_qty(99) == 6.0
    assert position.pending_qty(100) == -4.0  # d1 expires at 100
    assert list(position.pending) == ["d2"]
    assert position.pending_qty(200) == 0.0


def test_pending_qty_when_a_fill_settles_part_of_a_decision_then_the_next_read_sees_it() -> None:
    position, ledger = Position(), Ledger()
    add_pending(position, "d1", 10.0, expires_at=1_000)
    assert position.pending_qty(1) == 10.0

    apply_fill(position, ledger, 4.0, 100.0, 0.0, "d1")
    assert position.pending_qty(2) == 6.0
    apply_fill(position, ledger, 6.0, 100.0, 0.0, "d1")
    assert position.pending_qty(3) == 0.0
    assert position.projected(3) == 10.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "fill", "read"]),
            st.integers(min_value=0, max_value=5),
            st.floats(min_value=-50, max_value=50, allow_nan=False).filter(lambda q: q != 0),
            st.integers(min_value=0, max_value=300),
        ),
        max_size=60,
    )
)
def test_pending_qty_when_entries_are_added_filled_and_read_in_any_order_then_it_equals_a_fresh_sum(
    steps: list[tuple[str, int, float, int]],
) -> None:
    position, ledger = Position(), Ledger()
    ts = 0
    for op, k, qty, dt in steps:
        ts += dt // 3  # event time moves forward, sometimes not at all
        if op == "add":
            add_pending(position, f"d{k}", qty, expires_at=ts + dt)
        elif op == "fill":
            apply_fill(position, ledger, qty, 10.0, 0.0, f"d{k}")
        expected = _fresh_sum(position, ts)
        assert position.pending_qty(ts) == expected
