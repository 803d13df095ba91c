"""Seed 001's worked examples as acceptance tests (SPEC §6.3)."""

from __future__ import annotations

from pathlib import Path

from schemas.config import load_config
from streams.testing import TapeBuilder

T0 = "2024-01-15T10:00:00Z"


def _book_with_aapl(qty: float, fill_price: float) -> TapeBuilder:
    tape = TapeBuilder().equity("acct", T0, 100_000)
    tape.flat_bar("AAPL", T0, fill_price)
    return tape.fill("acct", "AAPL", "BUY", qty, fill_price, "2024-01-15T10:01:00Z")


def test_signal_when_position_inside_band_then_noop_within_band(seed001_path: Path) -> None:
    tape = _book_with_aapl(100, 150.0)
    tape.signal("acct", "AAPL", "2024-01-15T10:30:00Z", price=150.50, target_notional=15_000)

    result = tape.run(load_config(seed001_path))

    (decision,) = result.decisions
    assert (decision.action.value, decision.reason, decision.qty) == ("NOOP", "within_band", 0.0)
    assert decision.facts["band"] == [14_250.0, 15_750.0]


def test_signal_when_position_below_band_then_buy_five_to_lower_edge(seed001_path: Path) -> None:
    tape = _book_with_aapl(90, 150.0)
    tape.signal("acct", "AAPL", "2024-01-15T10:30:00Z", price=151.0, target_notional=15_000)

    (decision,) = tape.run(load_config(seed001_path)).decisions

    assert decision.action.value == "ALLOW"
    assert decision.side is not None and decision.side.value == "BUY"
    assert decision.qty == 5
    assert (decision.layer.value, decision.reason) == ("per_symbol", "buy_to_lower_bound")


def test_signal_when_target_above_symbol_cap_and_trade_limit_then_clip_ten_shares(seed001_path: Path) -> None:
    tape = TapeBuilder().equity("acct", T0, 100_000)
    tape.signal("acct", "NVDA", "2024-01-15T10:30:00Z", price=150.0, target_notional=25_000)

    (decision,) = tape.run(load_config(seed001_path)).decisions

    assert (decision.action.value, decision.qty, decision.notional) == ("CLIP", 10, 1500.0)
    assert decision.layer.value == "per_trade"
    assert [(c.layer.value, c.reason) for c in decision.clips] == [
        ("per_symbol", "symbol_cap"),
        ("per_trade", "max_notional"),
    ]
    assert decision.clips[0].after == 20_000


def test_signal_when_change_below_threshold_then_noop_signal_unchanged(seed001_path: Path) -> None:
    tape = _book_with_aapl(90, 150.0)
    tape.signal("acct", "AAPL", "2024-01-15T10:30:00Z", price=151.0, target_notional=15_000)
    tape.signal("acct", "AAPL", "2024-01-15T10:31:00Z", price=151.0, target_notional=15_500)

    decisions = tape.run(load_config(seed001_path)).decisions

    assert [d.reason for d in decisions] == ["buy_to_lower_bound", "signal_unchanged"]


def test_bar_when_cadence_not_elapsed_then_no_decision_and_counted(seed001_path: Path) -> None:
    tape = _book_with_aapl(100, 150.0)
    tape.signal("acct", "AAPL", "2024-01-15T10:30:00Z", price=150.0, target_notional=15_000)
    tape.flat_bar("AAPL", "2024-01-15T10:40:00Z", 130.0)  # outside band, 10 min later
    tape.flat_bar("AAPL", "2024-01-15T11:00:00Z", 130.0)  # 30 min later: re-band

    result = tape.run(load_config(seed001_path))

    cadence = [d for d in result.decisions if d.origin.value == "cadence"]
    assert result.engine.stats["noop_cadence"] == 1
    assert len(cadence) == 1
    assert cadence[0].source_id == "AAPL@2024-01-15T11:00:00.000Z"
    assert cadence[0].side is not None and cadence[0].side.value == "BUY"


def test_group_cap_when_adding_beyond_group_then_clipped_to_headroom() -> None:
    config = {
        "risk": {
            "per_trade": {"lot_size": 1},
            "groups": {
                "cap_by_group": {"Technology": 20_000},
                "symbol_groups": {"AAPL": "Technology", "MSFT": "Technology"},
            },
            "clusters": {"cap_pct": None},
        }
    }
    tape = TapeBuilder().equity("acct", T0, 100_000)
    tape.flat_bar("AAPL", T0, 100.0).fill("acct", "AAPL", "BUY", 150, 100.0, T0)
    tape.signal("acct", "MSFT", "2024-01-15T10:30:00Z", price=100.0, target_notional=10_000)

    (decision,) = tape.run(config).decisions

    assert (decision.action.value, decision.layer.value, decision.reason) == ("CLIP", "group", "group_cap")
    assert decision.qty == 50  # 20,000 cap - 15,000 held = 5,000 of room


def test_net_cap_when_trade_shrinks_net_then_allowed_even_above_cap() -> None:
    config = {"risk": {"portfolio": {"net_cap": 5_000}, "clusters": {"cap_pct": None}}}
    tape = TapeBuilder().equity("acct", T0, 100_000)
    tape.flat_bar("AAPL", T0, 100.0).fill("acct", "AAPL", "BUY", 100, 100.0, T0)  # net +10,000 > cap
    tape.signal("acct", "MSFT", "2024-01-15T10:30:00Z", price=100.0, target_notional=-8_000)

    (decision,) = tape.run(config).decisions

    assert decision.action.value == "ALLOW"
    assert decision.side is not None and decision.side.value == "SELL"


def test_gross_cap_when_no_headroom_then_deny_portfolio() -> None:
    config = {"risk": {"portfolio": {"gross_cap": 10_000}, "clusters": {"cap_pct": None}}}
    tape = TapeBuilder().equity("acct", T0, 100_000)
    tape.flat_bar("AAPL", T0, 100.0).fill("acct", "AAPL", "BUY", 100, 100.0, T0)
    tape.signal("acct", "MSFT", "2024-01-15T10:30:00Z", price=100.0, target_notional=5_000)

    (decision,) = tape.run(config).decisions

    assert (decision.action.value, decision.layer.value, decision.reason) == ("DENY", "portfolio", "gross_cap")
    assert decision.qty == 0


def test_vol_target_when_realised_vol_double_target_then_target_halved() -> None:
    config = {
        "risk": {
            "portfolio": {"vol_target": {"enabled": True, "target_daily_vol": 0.01, "lookback": 4, "min_scale": 0.25}},
            "account": {"daily_loss": None, "max_total_loss_pct": None, "intraday_drawdown": None},
            "clusters": {"cap_pct": None},
        }
    }
    tape = TapeBuilder()
    equity = 100_000.0
    for day, change in enumerate([0.02, -0.02, 0.02, -0.02, 0.02, 0.0]):
        tape.equity("acct", f"2024-01-{10 + day:02d}T12:00:00Z", equity)
        equity *= 1 + change
    tape.signal("acct", "MSFT", "2024-01-15T13:00:00Z", price=100.0, target_notional=10_000)

    (decision,) = tape.run(config).decisions

    scale = decision.facts["vol_scale"]
    assert 0.4 < scale < 0.5  # stdev of alternating ±2 % returns is ~2.2 %
    assert decision.facts["requested_target"] == 10_000 * scale
