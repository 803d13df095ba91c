"""Market state shared by every account: last close and Wilder ATR per symbol (seed 003 sizing)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SymbolMarket:
    last_ts: int = -(2**62)
    close: float = 0.0
    atr: float | None = None
    tr_count: int = 0
    tr_sum: float = 0.0


def update_atr(m: SymbolMarket, high: float, low: float, period: int) -> None:
    """Wilder ATR: mean of the first `period` true ranges, then (ATR·(p-1) + TR) / p."""
    if m.tr_count == 0 and m.close == 0.0:
        true_range = high - low
    else:
        true_range = max(high - low, abs(high - m.close), abs(low - m.close))
    if m.tr_count < period:
        m.tr_sum += true_range
        m.tr_count += 1
        if m.tr_count == period:
            m.atr = m.tr_sum / period
        return
    assert m.atr is not None  # noqa: S101 - set when tr_count reached period
    m.atr = (m.atr * (period - 1) + true_range) / period
