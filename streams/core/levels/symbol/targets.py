"""Level 3's per-symbol target caps: the symbol's notional cap and its weight cap (seed 001 §Per-Symbol).

Level 3 caps the target it commits; Level 4 hands the same weight cap to the decision kernel, so
both read it from here.
"""

from __future__ import annotations

import math

from schemas.config import RiskConfig


def capped_target(target: float, rules: RiskConfig, equity: float, symbol: str) -> float:
    for limit in (rules.per_symbol.cap_for(symbol), weight_cap(rules, equity)):
        if limit is not None and abs(target) > limit:
            target = math.copysign(max(limit, 0.0), target)
    return target


def weight_cap(rules: RiskConfig, equity: float) -> float | None:
    pct = rules.per_symbol.max_weight_pct
    return pct * equity if pct is not None else None
