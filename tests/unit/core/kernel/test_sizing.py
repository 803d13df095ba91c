"""Sizing (seed 003): fixed dollar/percent, volatility-adjusted by ATR, Kelly from the ledger."""

from __future__ import annotations

from schemas.config import SizingRules
from streams.core.kernel.sizing import kelly_fraction, size_notional
from streams.core.levels.market.atr import SymbolMarket, update_atr
from streams.core.positions import Ledger, Position, apply_fill
from streams.testing import TapeBuilder


def test_volatility_adjusted_when_atr_5_risk_100_multiplier_2_then_ten_shares_seed003() -> None:
    rules = SizingRules(method="volatility_adjusted", risk_per_trade_pct=0.01, atr_multiplier=2.0)

    notional, method = size_notional("LONG", 10_000, 100.0, 5.0, rules, Ledger())

    assert method == "volatility_adjusted"
    assert notional / 100.0 == 10  # risk $100 / (ATR 5 × 2) = 10 shares


def test_volatility_adjusted_when_atr_20_then_two_and_a_half_shares_same_risk_seed003() -> None:
    rules = SizingRules(method="volatility_adjusted", risk_per_trade_pct=0.01, atr_multiplier=2.0)

    notional, _ = size_notional("SHORT", 10_000, 200.0, 20.0, rules, Ledger())

    assert notional == -2.5 * 200.0


def test_fixed_methods_when_sized_then_dollar_and_percent_of_equity() -> None:
    assert size_notional("LONG", 50_000, 10, None, SizingRules(method="fixed_dollar"), Ledger())[0] == 10_000
    assert size_notional("SHORT", 50_000, 10, None, SizingRules(method="fixed_percent"), Ledger())[0] == -5_000
    assert size_notional("FLAT", 50_000, 10, None, SizingRules(method="fixed_dollar"), Ledger())[0] == 0


def test_kelly_when_enough_trades_then_half_kelly_of_win_rate_and_payoff() -> None:
    ledger = Ledger(wins=12, losses=8, win_sum=12 * 200.0, loss_sum=8 * 100.0)  # W=0.6, R=2
    rules = SizingRules(method="kelly", kelly_fraction=0.5, kelly_min_trades=20)

    f = kelly_fraction(ledger, rules)

    assert abs(f - 0.5 * (0.6 - 0.4 / 2)) < 1e-12  # 0.2


def test_kelly_when_too_few_trades_or_negative_edge_then_zero() -> None:
    rules = SizingRules(method="kelly", kelly_min_trades=20)

    assert kelly_fraction(Ledger(wins=5, losses=2, win_sum=500, loss_sum=100), rules) == 0.0
    assert kelly_fraction(Ledger(wins=5, losses=15, win_sum=500, loss_sum=1500), rules) == 0.0


def test_ledger_when_round_trips_close_then_wins_and_losses_counted_with_fees() -> None:
    position, ledger = Position(), Ledger()
    apply_fill(position, ledger, 10, 100.0, 1.0, None)
    apply_fill(position, ledger, -10, 110.0, 1.0, None)  # +100 - 2 fees
    apply_fill(position, ledger, -5, 50.0, 0.0, None)
    apply_fill(position, ledger, 5, 60.0, 0.0, None)  # short loses 50

    assert (ledger.wins, ledger.losses, ledger.win_sum, ledger.loss_sum) == (1, 1, 98.0, 50.0)
    assert position.qty == 0


def test_wilder_atr_when_period_bars_seen_then_mean_true_range_then_smoothed() -> None:
    market = SymbolMarket()
    for high, low, close in [(11, 9, 10), (12, 10, 11), (13, 9, 12)]:
        update_atr(market, high, low, 3)
        market.close = close
    assert market.atr == (2 + 2 + 4) / 3
    update_atr(market, 13, 12, 3)  # TR = max(1, |13-12|, |12-12|) = 1
    assert market.atr is not None and abs(market.atr - ((8 / 3) * 2 + 1) / 3) < 1e-12


def test_direction_signal_when_volatility_adjusted_config_then_engine_sizes_from_signal_atr() -> None:
    config = {
        "risk": {
            "sizing": {"method": "volatility_adjusted"},
            "clusters": {"cap_pct": None},
            "per_symbol": {"band_pct": 0},
        }
    }
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 10_000)
    tape.signal("a", "SPY", "2024-01-15T14:01:00Z", price=100.0, direction="LONG", atr=5.0)

    (decision,) = tape.run(config).decisions

    assert (decision.action.value, decision.qty) == ("ALLOW", 10)
    assert decision.facts["sizing_method"] == "volatility_adjusted"
