"""Level 3's snapshot (streams.core.levels.symbol.snapshot): what a book stores is what `asdict` would give."""

from __future__ import annotations

from dataclasses import asdict

from schemas.config import load_config
from streams.core.levels.symbol.snapshot import dump_symbol
from streams.core.levels.symbol.stage import SymbolStage
from streams.core.levels.symbol.stops import SymbolState
from streams.core.positions import Ledger


def test_book_when_dumped_then_symbol_states_and_ledger_equal_their_asdict() -> None:
    stage = SymbolStage(load_config(None))
    book = stage.book("a")
    book.symbols["AAPL"] = SymbolState(committed=1_500.0, last_eval=7, last_signal_ts=5, vetoed=True, veto_bars_left=2)
    book.ledger = Ledger(wins=3, losses=1, win_sum=12.5, loss_sum=-4.0)

    snapshot = dump_symbol(stage, {"a"})["a"]

    assert snapshot["symbols"] == {"AAPL": asdict(book.symbols["AAPL"])}
    assert snapshot["ledger"] == asdict(book.ledger)
    assert list(snapshot["ledger"]) == list(asdict(book.ledger))
