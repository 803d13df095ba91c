"""Dynamic risk budget (seed 002, SPEC §6.7): regimes, the benchmark classifier, triggers, the gross budget.

- Regime in force for an account: its own SET_REGIME pin, else a pin on every account (`*`), else
  the classifier's reading of `budget.benchmark`, else `initial_regime`.
- Classifier, in event time over the last `window` returns of the benchmark's bar closes:
  vol = stdev of simple returns × sqrt(periods_per_year); drawdown = 1 − close / highest close of
  the window (the trend measure). `crisis` when vol >= crisis_vol or drawdown >= crisis_drawdown;
  else `bear` when vol >= bear_vol or drawdown >= bear_drawdown; else `bull`. No reading before
  `min_periods` returns.
- Gross budget = equity × equity_allocation × leverage_limit; the kernel enforces it as a lower
  gross cap (`budget_cap` in the decision facts).
- Triggers (regime change, correlation spike, vol breach, drift) publish a recommendation on their
  edge, when they become true, never while they stay true.

Pure: no I/O, no clock; `statistics.stdev` and `math.fsum` keep the figures order-independent.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.config import Budget, Regime, RegimeClassifier

BULL, BEAR, CRISIS = "bull", "bear", "crisis"
AUTO = "auto"
REGIME_CHANGE, CORRELATION_SPIKE, VOL_BREACH, DRIFT = "regime_change", "correlation_spike", "vol_breach", "drift"
TRIGGERS = (REGIME_CHANGE, CORRELATION_SPIKE, VOL_BREACH, DRIFT)
# Recommendations kept per account for the recommendations view (the topic keeps them all).
RECENT = 20
TRADING_DAYS_PER_YEAR = 252


@dataclass(frozen=True, slots=True)
class Reading:
    """One classification of the benchmark: the regime and the figures behind it."""

    regime: str
    vol: float
    drawdown: float
    returns: int

    def to_json(self) -> dict[str, Any]:
        return {"regime": self.regime, "vol": self.vol, "drawdown": self.drawdown, "returns": self.returns}


@dataclass(slots=True)
class ClassifierState:
    """Level-2 state of the classifier: the benchmark's last closes and the regime it last read."""

    closes: list[float] = field(default_factory=list)
    regime: str | None = None


@dataclass(slots=True)
class AccountBudget:
    """Level-1 budget state of one account: pin, regime in force, realized vol, the vol-breach edge."""

    pinned: str | None = None
    regime: str | None = None
    source: str | None = None
    vol: float | None = None
    vol_day: int | None = None
    vol_breach: bool = False
    recommendations: list[dict[str, Any]] = field(default_factory=list)


def classify(closes: Sequence[float], params: RegimeClassifier) -> Reading | None:
    """The regime the benchmark's closes call for, or None before `min_periods` returns."""
    window = list(closes[-(params.window + 1) :])
    returns = [b / a - 1 for a, b in itertools.pairwise(window) if a > 0]
    if len(returns) < params.min_periods:
        return None
    vol = statistics.stdev(returns) * math.sqrt(params.periods_per_year)
    drawdown = 1 - window[-1] / max(window)
    if vol >= params.crisis_vol or drawdown >= params.crisis_drawdown:
        regime = CRISIS
    elif vol >= params.bear_vol or drawdown >= params.bear_drawdown:
        regime = BEAR
    else:
        regime = BULL
    return Reading(regime, vol, drawdown, len(returns))


def observe(state: ClassifierState, close: float, params: RegimeClassifier) -> Reading | None:
    """Add one benchmark close; the reading when the regime it calls for changed, else None."""
    state.closes.append(close)
    del state.closes[: -(params.window + 1)]
    reading = classify(state.closes, params)
    if reading is None or reading.regime == state.regime:
        return None
    state.regime = reading.regime
    return reading


def realized_vol(closes: Sequence[float], window: int, min_periods: int) -> float | None:
    """Annualized stdev of the last `window` daily returns of end-of-day equity; None when too few."""
    recent = list(closes[-(window + 1) :])
    returns = [b / a - 1 for a, b in itertools.pairwise(recent) if a > 0]
    if len(returns) < max(min_periods, 2):
        return None
    return statistics.stdev(returns) * math.sqrt(TRADING_DAYS_PER_YEAR)


def regime_in_force(pinned: str | None, pinned_all: str | None, market: str | None, initial: str) -> tuple[str, str]:
    """(regime, source): the account's pin, the pin on every account, the classifier, the initial regime."""
    if pinned is not None:
        return pinned, "control"
    if pinned_all is not None:
        return pinned_all, "control"
    if market is not None:
        return market, "classifier"
    return initial, "initial"


def gross_budget(equity: float, regime: Regime) -> float:
    """Seed 002: the budget's gross cap = equity × equity_allocation × leverage_limit."""
    return max(equity, 0.0) * regime.equity_allocation * regime.leverage_limit


def budget_cap(config: Budget, regime: str | None, equity: float | None) -> float | None:
    """The gross cap of the budget in force, or None when the budget is off or nothing is known."""
    if not config.enabled or regime is None or equity is None:
        return None
    allocation = config.regime_allocations.get(regime)
    return gross_budget(equity, allocation) if allocation is not None else None


def vol_limit(config: Budget, regime: str) -> float:
    """Realized vol at or above this breaches the regime's vol target (vol_breach × vol_target)."""
    return config.rebalancing_triggers.vol_breach * config.regime_allocations[regime].vol_target


def target_scale(config: Budget, regime: str | None, weights: Mapping[str, float]) -> float:
    """Factor that brings target weights within the regime's gross budget: min(1, alloc × leverage / Σw)."""
    if not config.enabled or regime is None or regime not in config.regime_allocations:
        return 1.0
    allocation = config.regime_allocations[regime]
    total = math.fsum(abs(w) for w in weights.values())
    room = allocation.equity_allocation * allocation.leverage_limit
    return min(1.0, room / total) if total > 0 else 1.0


def max_drift(
    values: Mapping[str, float], equity: float, targets: Mapping[str, float], max_weight: float
) -> tuple[float, str] | None:
    """Largest |value / equity − target weight| and its symbol (seed 004 drift); None without equity.

    Members are the target symbols, or every held symbol at equal weight when there are no targets
    (as the rebalance plan does); target weights are capped at `max_weight` (seed 004 §7).
    """
    if equity <= 0:
        return None
    held = sorted(s for s, v in values.items() if v != 0)
    members = dict(targets) if targets else {s: 1.0 / len(held) for s in held}
    if not members:
        return None
    worst: tuple[float, str] | None = None
    for symbol in sorted(members):
        drift = abs(values.get(symbol, 0.0) / equity - min(members[symbol], max_weight))
        if worst is None or drift > worst[0]:
            worst = (drift, symbol)
    return worst


def remember(history: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """Keep the last `RECENT` recommendations of an account, oldest first."""
    history.append(record)
    del history[:-RECENT]
