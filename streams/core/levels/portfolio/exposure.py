"""Level 4 — portfolio exposures: group, cluster, gross, net, concentration and heat (seed 001, seed 003).

Sums use math.fsum so that the result does not depend on the order positions were opened in.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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


SCALE = 1 << 1074  # every finite float is an integer multiple of 2**-1074


def exact(x: float) -> int:
    """`x` as an exact integer multiple of 2**-1074: sums of these are exact, and `n / SCALE` rounds an
    exact sum once, correctly (Python's int division), which is what `math.fsum` returns."""
    n, d = x.as_integer_ratio()  # d is a power of two, at most 2**1074
    return n << (1075 - d.bit_length())


@dataclass(slots=True)
class ExposureSums:
    """An account's exposure sums over its held positions, kept as each position's value changes.

    `exposures` sums every position for each decision: O(positions) per decision, so a rebalance run
    over a 500-name book was O(n²). These sums give the very same floats: each value counted
    (`contrib`, projected quantity x mark, only non-zero quantities) is added to exact integer sums
    (`exact`) and taken out again when it changes, and `exposure` rounds once, as `fsum` does. The owner
    marks a symbol `dirty` when its position or mark changes, and `due` holds when a position's earliest
    pending decision expires, so a read at a later time values again exactly those. A read after every
    position changed costs about what summing them all did; a read after few changes costs O(1).
    """

    cluster_version: int
    contrib: dict[str, float] = field(default_factory=dict)
    scaled: dict[str, int] = field(default_factory=dict)  # symbol -> exact(contrib)
    group: dict[str, str] = field(default_factory=dict)  # symbol -> its group, when counted
    cluster: dict[str, str] = field(default_factory=dict)  # symbol -> its cluster, when counted
    gross: int = 0
    net: int = 0
    groups: dict[str, int] = field(default_factory=dict)
    clusters: dict[str, int] = field(default_factory=dict)
    odd: int = 0  # counted values that are not finite (then `exposure` sums as `exposures` does)
    dirty: set[str] = field(default_factory=set)
    due: list[tuple[int, str]] = field(default_factory=list)  # heap of (earliest pending expiry, symbol)

    def put(self, sym: str, value: float | None, group: str, cluster: str) -> None:
        """Count `value` for `sym` (None: the position counts nothing), replacing what it counted."""
        if sym in self.contrib:
            old = self.scaled.pop(sym, None)
            if old is None:
                self.odd -= 1
            else:
                magnitude = abs(old)
                self.gross -= magnitude
                self.net -= old
                self.groups[self.group[sym]] -= magnitude
                self.clusters[self.cluster[sym]] -= magnitude
            del self.contrib[sym], self.group[sym], self.cluster[sym]
        if value is None:
            return
        self.contrib[sym] = value
        self.group[sym], self.cluster[sym] = group, cluster
        if not math.isfinite(value):
            self.odd += 1
            return
        scaled = self.scaled[sym] = exact(value)
        magnitude = abs(scaled)
        self.gross += magnitude
        self.net += scaled
        self.groups[group] = self.groups.get(group, 0) + magnitude
        self.clusters[cluster] = self.clusters.get(cluster, 0) + magnitude

    def expires(self, sym: str, at: int) -> None:
        """`sym`'s position has a pending decision that expires at `at`: value it again from then on."""
        heapq.heappush(self.due, (at, sym))

    def take_due(self, ts: int) -> None:
        """Mark dirty every symbol whose pending decisions may have expired by `ts`."""
        due = self.due
        while due and due[0][0] <= ts:
            self.dirty.add(heapq.heappop(due)[1])

    def exposure(self, sym: str, value: float, group: str, cluster: str) -> Exposure:
        """`exposures` over the other counted positions and `sym` at `value` (in its own group and cluster)."""
        if self.odd or not math.isfinite(value):
            others = [(s, v) for s, v in self.contrib.items() if s != sym]
            groups = {**self.group, sym: group}
            clusters = {**self.cluster, sym: cluster}
            return exposures([*others, (sym, value)], groups.__getitem__, clusters.__getitem__, group, cluster)
        old = self.scaled.get(sym, 0)
        new = exact(value)
        change = abs(new) - abs(old)
        return Exposure(
            (self.groups.get(group, 0) + change) / SCALE,
            (self.clusters.get(cluster, 0) + change) / SCALE,
            (self.gross + change) / SCALE,
            (self.net + new - old) / SCALE,
        )


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
