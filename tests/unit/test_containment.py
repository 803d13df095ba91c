"""Containment (SPEC §8, issue 12): a level that raises on an item never stops the guard.

The item is dead-lettered with its origin, a `level_error` event is published, the account concerned
fails closed (HALTED, `internal_error`, flattened) and every other account goes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from streams.core.ids import decision_id
from streams.core.levels.market.stage import MarketStage
from streams.core.levels.symbol.stage import SymbolStage
from streams.testing import TapeBuilder

CONFIG: dict[str, Any] = {
    "risk": {
        "per_trade": {"max_notional": 1_000_000, "lot_size": 1, "min_order_notional": 0},
        "per_symbol": {"default_cap": 1_000_000, "band_pct": 0.01},
        "portfolio": {"gross_cap": 10_000_000, "net_cap": 10_000_000},
        "account": {"daily_loss": None, "max_total_loss_pct": None, "intraday_drawdown": None},
    }
}


@pytest.fixture
def boom_on_symbol(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Level 3 raises on any signal for the symbol BOOM (a stand-in for an unforeseen bug)."""
    original = SymbolStage._signal

    def signal(self: SymbolStage, item: Any, book: Any) -> Any:
        if item.event.symbol == "BOOM":
            raise RuntimeError("unforeseen")
        return original(self, item, book)

    monkeypatch.setattr(SymbolStage, "_signal", signal)
    yield


def _session(with_boom: bool) -> TapeBuilder:
    tape = TapeBuilder()
    tape.flat_bar("AAA", "2024-01-02T15:00:00Z", 100.0).flat_bar("BOOM", "2024-01-02T15:00:00Z", 50.0)
    tape.equity("A1", "2024-01-02T15:00:01Z", 100_000).equity("A2", "2024-01-02T15:00:01Z", 100_000)
    tape.signal("A1", "AAA", "2024-01-02T15:01:00Z", signal_id="a1-aaa", target_notional=10_000)
    first = decision_id("A1", "signal", "a1-aaa", "AAA")
    tape.fill("A1", "AAA", "BUY", 100, 100.0, "2024-01-02T15:01:01Z", fill_id="f1", decision_id=first)
    if with_boom:
        tape.signal("A1", "BOOM", "2024-01-02T15:02:00Z", signal_id="a1-boom", target_notional=5_000)
    tape.signal("A2", "AAA", "2024-01-02T15:03:00Z", signal_id="a2-aaa", target_notional=20_000)
    tape.signal("A1", "AAA", "2024-01-02T15:04:00Z", signal_id="a1-more", target_notional=30_000)
    return tape


def _outputs(data: bytes, topic: str) -> list[dict[str, Any]]:
    rows = [orjson.loads(line) for line in data.splitlines() if line.strip()]
    return [row["value"] for row in rows if row["topic"] == topic]


@pytest.mark.usefixtures("boom_on_symbol")
def test_replay_when_a_level_raises_on_an_account_item_then_dead_letter_event_and_fail_closed() -> None:
    result = _session(with_boom=True).run(CONFIG)

    letters = _outputs(result.data, "deadletter")
    assert len(letters) == 1
    assert letters[0]["source"]["line"] == 7  # the BOOM signal's line: its origin
    assert letters[0]["error"].startswith("symbol: RuntimeError: unforeseen")
    assert '"signal_id":"a1-boom"' in letters[0]["raw"]
    errors = [e for e in result.events if e.kind == "level_error"]
    assert [(e.account, e.details["level"]) for e in errors] == [("A1", "symbol")]
    halts = [(h.account, h.previous_state, h.state, h.reason) for h in result.halts]
    assert halts == [("A1", "ACTIVE", "HALTED", "internal_error")]
    assert result.engine.stats["level_errors"] == 1
    assert result.engine.stats["dead_letters"] == 1


@pytest.mark.usefixtures("boom_on_symbol")
def test_fail_closed_when_account_holds_a_position_then_flattened_and_entries_denied() -> None:
    result = _session(with_boom=True).run(CONFIG)

    a1 = [d for d in result.decisions if d.account == "A1"]
    flatten = [d for d in a1 if d.origin.value == "flatten"]
    assert [(d.symbol, d.action.value, d.side.value if d.side else None, d.qty) for d in flatten] == [
        ("AAA", "ALLOW", "SELL", 100.0)
    ]
    later = next(d for d in a1 if d.source_id == "a1-more")
    assert (later.action.value, later.layer.value) == ("DENY", "account")


@pytest.mark.usefixtures("boom_on_symbol")
def test_other_accounts_when_one_fails_closed_then_decided_as_without_the_bad_line() -> None:
    with_boom = _session(with_boom=True).run(CONFIG)
    without = _session(with_boom=False).run(CONFIG)

    def of_a2(result: Any) -> list[str]:
        return [d.model_dump_json() for d in result.decisions if d.account == "A2"]

    assert of_a2(with_boom) == of_a2(without)
    assert of_a2(with_boom)  # A2 was decided at all


@pytest.mark.usefixtures("boom_on_symbol")
def test_fail_closed_when_the_next_trading_day_starts_then_active_again() -> None:
    tape = _session(with_boom=True)
    tape.equity("A1", "2024-01-03T15:00:00Z", 100_000)
    tape.signal("A1", "AAA", "2024-01-03T15:01:00Z", signal_id="a1-next-day", target_notional=50_000)
    result = tape.run(CONFIG)

    states = [(h.state, h.reason) for h in result.halts if h.account == "A1"]
    assert states == [("HALTED", "internal_error"), ("ACTIVE", "day_reset")]
    next_day = next(d for d in result.decisions if d.source_id == "a1-next-day")
    assert next_day.action.value in ("ALLOW", "CLIP")


def test_market_wide_item_when_market_level_raises_then_dead_lettered_and_nobody_halted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = MarketStage._bar

    def bar(self: MarketStage, item: Any) -> Any:
        if item.event.symbol == "BAD":
            raise ValueError("broken bar")
        return original(self, item)

    monkeypatch.setattr(MarketStage, "_bar", bar)
    tape = _session(with_boom=False)
    tape.flat_bar("BAD", "2024-01-02T15:05:00Z", 10.0)
    tape.signal("A2", "AAA", "2024-01-02T15:06:00Z", signal_id="a2-after", target_notional=40_000)
    result = tape.run(CONFIG)

    letters = _outputs(result.data, "deadletter")
    assert [letter["error"] for letter in letters] == ["market: ValueError: broken bar"]
    assert [e.account for e in result.events if e.kind == "level_error"] == [None]
    assert result.halts == []
    assert any(d.source_id == "a2-after" and d.action.value in ("ALLOW", "CLIP") for d in result.decisions)


@pytest.mark.usefixtures("boom_on_symbol")
def test_replay_when_a_level_raised_then_output_is_byte_identical_across_runs() -> None:
    assert _session(with_boom=True).run(CONFIG).data == _session(with_boom=True).run(CONFIG).data
