"""Level 3's snapshot (streams.core.levels.symbol.snapshot): what a book stores, and under which keys."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from schemas.config import load_config
from streams.core.items import Item
from streams.core.levels.symbol.snapshot import dump_symbol, load_symbol
from streams.core.levels.symbol.stage import WATCHERS_KEY, SymbolStage, symbol_key
from streams.core.levels.symbol.stops import SymbolState
from streams.core.positions import Ledger, Position, dump_position


def _stage_with_two_symbols() -> SymbolStage:
    stage = SymbolStage(load_config(None))
    book = stage.book("a")
    book.symbols["AAPL"] = SymbolState(committed=1_500.0, last_eval=7, last_signal_ts=5, vetoed=True, veto_bars_left=2)
    book.symbols["MSFT"] = SymbolState(committed=-300.0)
    book.filled["MSFT"] = Position(qty=-3.0, avg_entry=100.0)
    book.ledger = Ledger(wins=3, losses=1, win_sum=12.5, loss_sum=-4.0)
    return stage


def test_book_when_dumped_then_symbol_states_and_ledger_equal_their_asdict() -> None:
    stage = _stage_with_two_symbols()
    book = stage.books["a"]

    dumped = dump_symbol(stage, {"a", symbol_key("a", "AAPL")})

    assert dumped[symbol_key("a", "AAPL")] == {"state": asdict(book.symbols["AAPL"]), "filled": None}
    assert dumped["a"]["ledger"] == asdict(book.ledger)
    assert list(dumped["a"]["ledger"]) == list(asdict(book.ledger))
    assert "symbols" not in dumped["a"] and "filled" not in dumped["a"]  # one key per symbol, not in the account's
    assert symbol_key("a", "MSFT") not in dumped  # not named: not dumped


def test_book_when_fully_dumped_then_every_symbol_with_state_or_position_has_its_key() -> None:
    stage = _stage_with_two_symbols()
    stage.books["a"].filled["IBM"] = Position(qty=1.0, avg_entry=10.0)

    dumped = dump_symbol(stage)

    assert {k for k in dumped if k.startswith("a|sym|")} == {symbol_key("a", s) for s in ("AAPL", "IBM", "MSFT")}
    assert dumped[symbol_key("a", "IBM")] == {"state": None, "filled": dump_position(Position(qty=1.0, avg_entry=10.0))}


def test_snapshot_when_loaded_in_any_key_order_then_the_book_comes_back() -> None:
    stage = _stage_with_two_symbols()
    dumped = dump_symbol(stage)
    for order in (sorted(dumped), sorted(dumped, reverse=True)):
        fresh = SymbolStage(load_config(None))
        for key in order:
            load_symbol(fresh, key, dumped[key])
        assert fresh.books["a"].symbols == stage.books["a"].symbols
        assert fresh.books["a"].filled == stage.books["a"].filled
        assert fresh.books["a"].ledger == stage.books["a"].ledger
        assert fresh.symbols_changed == set()  # nothing to write again


def test_account_snapshot_from_before_the_symbol_keys_when_loaded_then_restored_and_reported_changed() -> None:
    stage = _stage_with_two_symbols()
    book = stage.books["a"]
    dumped = dump_symbol(stage)
    legacy = {
        **dumped["a"],
        "symbols": {s: asdict(v) for s, v in book.symbols.items()},
        "filled": {s: dump_position(p) for s, p in book.filled.items()},
    }
    newer = SymbolState(committed=42.0)  # a symbol key written after the upgrade wins over the inline copy

    fresh = SymbolStage(load_config(None))
    load_symbol(fresh, "a", legacy)
    load_symbol(fresh, symbol_key("a", "AAPL"), {"state": asdict(newer), "filled": None})

    assert fresh.books["a"].symbols == {"AAPL": newer, "MSFT": book.symbols["MSFT"]}
    assert fresh.books["a"].filled == book.filled
    # stored under their own keys next, and the account's value again without them
    assert fresh.symbols_changed == {symbol_key("a", "AAPL"), symbol_key("a", "MSFT"), "a"}


def test_bar_when_handled_then_only_the_symbol_keys_it_changed_and_the_partition_key_are_touched() -> None:
    from schemas.inputs import Bar
    from streams.core.items import item_for
    from streams.testing import TapeBuilder

    t0 = 1_704_205_800_000
    bar_fields = {"symbol": "Y", "open": 20, "high": 21, "low": 19, "close": 20.5}
    tape = TapeBuilder().equity("a", t0, 100_000).equity("b", t0, 100_000).flat_bar("X", t0, 10.0)
    tape.flat_bar("Y", t0, 20.0)
    tape.signal("a", "X", t0 + 1000, "s1", target_notional=1_000)
    tape.signal("a", "Y", t0 + 1000, "s2", target_notional=1_000)
    tape.signal("b", "Y", t0 + 1000, "s3", target_notional=1_000)
    engine = tape.run().engine
    engine.symbol.touched(item_for("bars", Bar.model_validate({**bar_fields, "ts": t0 + 1})), [])  # the tape's

    def touched_by_bar(ts: int) -> set[str]:
        touched: dict[str, set[str]] = {}
        engine.chain.run([item_for("bars", Bar.model_validate({**bar_fields, "ts": ts}))], 0, touched)
        return touched["symbol"]

    assert touched_by_bar(t0 + 60_000) == {"@"}  # a minute on: no cadence due, no position to trail
    due = touched_by_bar(t0 + 31 * 60_000)  # past the 30-minute cadence: both watchers' Y evaluated again
    assert due == {"@", symbol_key("a", "Y"), symbol_key("b", "Y")}  # no account key, not X
    assert WATCHERS_KEY not in due  # the watch list did not grow


def test_watch_list_when_it_grows_then_its_own_key_is_touched_and_dumped_without_marks() -> None:
    stage = SymbolStage(load_config(None))
    stage.book("a")
    stage.marks["X"] = (10.0, None)
    stage._watch("a", "Y")

    keys = stage.touched(Item("equity", "a", None), [])
    dumped = dump_symbol(stage, keys)

    assert keys == {"a", WATCHERS_KEY}
    assert dumped[WATCHERS_KEY] == {"watchers": {"Y": ["a"]}}
    assert "@" not in dumped  # marks and closes are written when a bar comes, not with the watch list


def test_partition_snapshot_from_before_the_watch_list_key_when_loaded_then_taken_and_reported_changed() -> None:
    fresh = SymbolStage(load_config(None))
    load_symbol(fresh, "@", {"watchers": {"X": ["a", "b"]}, "closes": {"X": 10.0}, "marks": {"X": [10.0, 0.5]}})

    assert fresh.watchers == {"X": {"a", "b"}}
    assert fresh.marks == {"X": (10.0, 0.5)}
    assert WATCHERS_KEY in fresh.touched(Item("equity", "a", None), [])  # stored under its own key next


def test_level_when_it_raises_after_changing_a_symbol_then_that_symbol_key_is_still_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from schemas.inputs import Signal
    from streams.testing import TapeBuilder

    t0 = 1_704_205_800_000
    engine = TapeBuilder().equity("a", t0, 100_000).flat_bar("X", t0, 10.0).run().engine
    engine.symbol.touched(Item("equity", "a", None), [])  # what the tape changed, reported

    def broken(self: SymbolStage, account: str, symbol: str) -> None:
        raise RuntimeError("after the symbol's state changed")

    monkeypatch.setattr(SymbolStage, "_watch", broken)  # `_signal` calls it after it has changed X's state
    signal = Signal.model_validate(
        {"signal_id": "s1", "account": "a", "symbol": "X", "ts": t0 + 1000, "strategy": "t", "target_notional": 1e3}
    )
    touched: dict[str, set[str]] = {}
    result = engine.chain.run([Item("signal", "a", signal)], 0, touched)

    assert [f.level for f in result.failures] == ["symbol"]
    assert symbol_key("a", "X") in touched["symbol"]  # stored with the account, not left for a later batch
