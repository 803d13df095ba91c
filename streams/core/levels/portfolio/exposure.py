"""Level 4 — portfolio exposures: group, cluster, gross, net, concentration and heat (seed 001, seed 003).

Sums use math.fsum so that the result does not depend on the order positions were opened in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streams.core.decimals import at_least, under


@dataclass(frozen=True, slots=True)
class Exposure:
    """An account's exposures seen from one symbol: its group and cluster, and the whole book."""

    group_exposure: float
    cluster_exposure: float
    gross: float
    net: float


def exposures(
    values: Iterable[tuple[str, float]],
    group_of: Callable[[str], str],
    cluster_of: Callable[[str], str],
    group: str,
    cluster: str,
) -> Exposure:
    """Σ|V| of the symbol's group and cluster, gross Σ|V| and net ΣV over (symbol, value) pairs."""
    in_group: list[float] = []
    in_cluster: list[float] = []
    absolute: list[float] = []
    signed: list[float] = []
    for symbol, value in values:
        magnitude = abs(value)
        absolute.append(magnitude)
        signed.append(value)
        if group_of(symbol) == group:
            in_group.append(magnitude)
        if cluster_of(symbol) == cluster:
            in_cluster.append(magnitude)
    return Exposure(math.fsum(in_group), math.fsum(in_cluster), math.fsum(absolute), math.fsum(signed))


def heat_score(exposure_value: float, risk_value: float, equity: float) -> float:
    """Seed 003: heat = 0.6·exposure%/30 + 0.4·risk%/30, clamped to [0, 1]."""
    if equity <= 0:
        return 1.0
    exposure_pct = 100 * abs(exposure_value) / equity
    risk_pct = 100 * abs(risk_value) / equity
    return min(max(0.6 * exposure_pct / 30 + 0.4 * risk_pct / 30, 0.0), 1.0)


def crossed_warning(before: float, after: float, warn: float) -> bool:
    """True when a weight rises from below the warning level to at or above it."""
    return under(before, warn) and at_least(after, warn)
