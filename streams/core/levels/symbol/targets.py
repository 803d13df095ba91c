"""Level 3's per-symbol target caps: the symbol's notional cap and its weight cap (seed 001 §Per-Symbol).

One rule, here: Level 3 caps the target it commits with it, and the decision kernel caps a trade's
target with it and records each cap that bound as a clip.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.config import RiskConfig
from streams.core.decimals import over

CapStep = tuple[str, float, float]
"""A cap that bound: its reason, |target| before and after."""


def cap_target(target: float, limits: Iterable[tuple[float | None, str]]) -> tuple[float, list[CapStep]]:
    """`target` clipped to each `(limit, reason)` in turn (None: no limit), and the caps that bound."""
    steps: list[CapStep] = []
    for limit, reason in limits:
        if limit is not None and over(abs(target), limit):  # a target on its cap is within it (SPEC §6.3)
            capped = ((target > 0) - (target < 0)) * max(limit, 0.0)
            steps.append((reason, abs(target), abs(capped)))
            target = capped
    return target, steps


def symbol_limits(rules: RiskConfig, equity: float, symbol: str) -> tuple[tuple[float | None, str], ...]:
    """The symbol's caps in the order they apply: its notional cap, then the weight cap."""
    return ((rules.per_symbol.cap_for(symbol), "symbol_cap"), (weight_cap(rules, equity), "max_weight"))


def capped_target(target: float, rules: RiskConfig, equity: float, symbol: str) -> float:
    """The target Level 3 commits: capped by the symbol's limits."""
    return cap_target(target, symbol_limits(rules, equity, symbol))[0]


def weight_cap(rules: RiskConfig, equity: float) -> float | None:
    pct = rules.per_symbol.max_weight_pct
    return pct * equity if pct is not None else None
