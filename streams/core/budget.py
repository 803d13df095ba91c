"""Dynamic risk budget (seed 002, SPEC §6.7): regimes in force, triggers, recommendations, the gross budget.

Shared by three levels, so it sits beside them rather than in one: Level 1 keeps each account's
regime and vol breach (`AccountBudget`) and the budget triggers it sees, Level 3 the drift trigger,
Level 4 enforces the gross budget; all of them recommend through `recommend`. The benchmark
classifier is Level 2's alone: `streams.core.levels.market.regime`.

- Regime in force for an account: its own SET_REGIME pin, else a pin on every account (`*`), else
  the classifier's reading of `budget.benchmark`, else `initial_regime`.
- Gross budget = equity × equity_allocation × leverage_limit; the kernel enforces it as a lower
  gross cap (`budget_cap` in the decision facts).
- Triggers (regime change, correlation spike, vol breach, drift) publish a recommendation on their
  edge, when they become true, never while they stay true.

No I/O, no clock (`recommend` builds the events, nothing more); `statistics.stdev` and `math.fsum`
keep the figures order-independent.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.config import Budget, Config, Regime
from schemas.outputs import RiskEvent
from streams.core.ids import stable_id
from streams.core.items import Output

AUTO = "auto"
REGIME_CHANGE, CORRELATION_SPIKE, VOL_BREACH, DRIFT = "regime_change", "correlation_spike", "vol_breach", "drift"
TRIGGERS = (REGIME_CHANGE, CORRELATION_SPIKE, VOL_BREACH, DRIFT)
# Recommendations kept per account for the recommendations view (the topic keeps them all).
RECENT = 20
TRADING_DAYS_PER_YEAR = 252


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


def beta_pct(config: Budget, regime: str | None, account_pct: float | None) -> float | None:
    """The cap on |beta exposure| / equity in force: the regime's own when it sets one, else the account's."""
    if config.enabled and regime is not None:
        allocation = config.regime_allocations.get(regime)
        if allocation is not None and allocation.max_abs_beta_pct is not None:
            return allocation.max_abs_beta_pct
    return account_pct


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


def recommend(
    config: Config,
    account: str,
    ts: int,
    fired: list[tuple[str, dict[str, Any]]],
    notes: dict[str, Any],
    equity: float | None,
    regime: str | None,
    history: list[dict[str, Any]],
) -> list[Output]:
    """One `budget_recommendation` per fired trigger; with auto_rebalance, a budget run on this item."""
    if not fired:
        return []
    budget = config.budget
    run = notes.get("rebalance")
    if budget.auto_rebalance and run is None:
        names = [trigger for trigger, _ in fired]
        run = {"trigger": "budget", "run_id": stable_id("run", account, "budget", ts, *names), "ts": ts}
        run["triggers"] = names
        notes["rebalance"] = run
    outputs: list[Output] = []
    for trigger, details in fired:
        record = {
            "trigger": trigger,
            "regime": regime,
            "equity": equity,
            "budget_gross_cap": budget_cap(budget, regime, equity),
            **details,
            "auto_rebalance": budget.auto_rebalance,
            "run_id": run["run_id"] if budget.auto_rebalance and run is not None else None,
        }
        event_id = stable_id("evt", "budget_recommendation", account, trigger, ts, regime)
        event = RiskEvent(event_id=event_id, kind="budget_recommendation", account=account, ts=ts, details=record)
        remember(history, {"event_id": event_id, "ts": ts, **record})
        outputs.append(Output("events", account, event))
    return outputs
