"""Level 3's duplicate-id memory is bounded (issue 16): duplicates are still never applied twice."""

from __future__ import annotations

from streams.core.levels.symbol.snapshot import dump_symbol, load_symbol
from streams.core.levels.symbol.stage import FILL_ID_WINDOW_MS, SymbolStage
from streams.testing import TapeBuilder

DAY = 86_400_000
T0 = 1_704_205_800_000  # 2024-01-02 14:30 UTC


def _session() -> TapeBuilder:
    return TapeBuilder().equity("a", T0, 100_000).flat_bar("X", T0, 10.0)


def test_signal_ids_when_later_instant_then_only_its_ids_kept_and_redeliveries_still_dropped() -> None:
    tape = _session()
    tape.signal("a", "X", T0 + 1000, "s1", target_notional=1_000)
    tape.signal("a", "X", T0 + 2000, "s2", target_notional=2_000)
    tape.signal("a", "X", T0 + 2000, "s3", target_notional=3_000)
    tape.signal("a", "X", T0 + 1000, "s1", target_notional=1_000)  # redelivered, before the latest instant
    tape.signal("a", "X", T0 + 2000, "s3", target_notional=3_000)  # redelivered, at the latest instant

    result = tape.run()

    book = result.engine.symbol.books["a"]
    assert book.seen_signals == {"s2", "s3"}
    assert [d.source_id for d in result.decisions] == ["s1", "s2", "s3"]
    assert result.engine.symbol.stats["duplicates"] == 1
    assert result.engine.symbol.stats["out_of_order"] == 1


def test_fill_ids_when_days_of_fills_then_only_the_window_kept_and_none_applied_twice() -> None:
    tape = _session()
    for day in range(12):
        tape.fill("a", "X", "BUY", 1, 10.0, T0 + day * DAY, f"f{day}")
    tape.fill("a", "X", "BUY", 1, 10.0, T0 + 11 * DAY, "f11")  # redelivered: a duplicate in the window
    tape.fill("a", "X", "BUY", 1, 10.0, T0 + 2 * DAY, "f2")  # redelivered after its id was forgotten

    result = tape.run()

    stage = result.engine.symbol
    book = stage.books["a"]
    assert book.filled["X"].qty == 12
    assert result.engine.position("a", "X").qty == 12
    assert stage.stats["duplicates"] == 1
    assert stage.stats["out_of_order"] == 1
    assert set(book.seen_fills) <= {f"f{day}" for day in range(3, 12)}
    assert all(ts > T0 + 11 * DAY - FILL_ID_WINDOW_MS - DAY for ts in book.seen_fills.values())


def test_snapshot_when_seen_fills_were_a_list_then_every_id_kept() -> None:
    result = _session().fill("a", "X", "BUY", 1, 10.0, T0, "f1").run()
    data = dump_symbol(result.engine.symbol)["a"]
    before_the_window = {k: v for k, v in data.items() if k not in ("newest_fill_ts", "fills_pruned_at")}
    stage = SymbolStage(result.engine.config)

    load_symbol(stage, "a", {**before_the_window, "seen_fills": ["f0", "f1"]})

    assert set(stage.books["a"].seen_fills) == {"f0", "f1"}
