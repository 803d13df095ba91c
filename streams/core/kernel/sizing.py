"""Sizing (seed 003 DynamicPositionSizer, SPEC §6.5): a direction signal becomes a target notional."""

from __future__ import annotations

from schemas.config import SizingRules
from streams.core.positions import Ledger


def kelly_fraction(ledger: Ledger, rules: SizingRules) -> float:
    """f = W - (1 - W) / R from closed round trips, times kelly_fraction; 0 when too few or f <= 0."""
    if ledger.trades < rules.kelly_min_trades or ledger.wins == 0:
        return 0.0
    win_rate = ledger.wins / ledger.trades
    if ledger.losses == 0:
        return rules.kelly_fraction * win_rate
    payoff = (ledger.win_sum / ledger.wins) / (ledger.loss_sum / ledger.losses) if ledger.loss_sum > 0 else 0.0
    if payoff <= 0:
        return 0.0
    f = win_rate - (1 - win_rate) / payoff
    return f * rules.kelly_fraction if f > 0 else 0.0


def size_notional(
    direction: str, equity: float, price: float, atr: float | None, rules: SizingRules, ledger: Ledger
) -> tuple[float, str]:
    """Signed target notional for LONG/SHORT/FLAT and the method that sized it."""
    if direction == "FLAT":
        return 0.0, "flat"
    sign = 1.0 if direction == "LONG" else -1.0
    method = rules.method
    if method == "fixed_dollar":
        return sign * rules.fixed_dollar, method
    if method == "volatility_adjusted":
        if atr is None or atr <= 0:
            return 0.0, "volatility_adjusted_no_atr"
        shares = rules.risk_per_trade_pct * equity / (atr * rules.atr_multiplier)
        return sign * shares * price, method
    if method == "kelly":
        return sign * kelly_fraction(ledger, rules) * equity, method
    # "fixed_percent", and "target" when a signal carries only a direction.
    return sign * rules.fixed_percent * equity, "fixed_percent"
