"""Level 2's market regime: the benchmark classifier of the risk budget (seed 002, SPEC §6.7).

In event time over the last `window` returns of the benchmark's bar closes: vol = stdev of simple
returns × sqrt(periods_per_year); drawdown = 1 − close / highest close of the window (the trend
measure). `crisis` when vol >= crisis_vol or drawdown >= crisis_drawdown; else `bear` when vol >=
bear_vol or drawdown >= bear_drawdown; else `bull`. No reading before `min_periods` returns.

Split from `streams.core.budget` because only Level 2 reads the benchmark (Level 1 hears the regime
from the bar's `market` note); the rest of the budget is shared by Levels 1, 3 and 4 and stays there.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.config import RegimeClassifier

BULL, BEAR, CRISIS = "bull", "bear", "crisis"


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
