"""The DataFrame API's throughput (SPEC §12, docs/backtesting.md): 500 symbols x one year of daily bars.

Synthetic daily bars of a one-factor market (seeded), equal-weight targets on every day (dense: a signal per
symbol and day, the API's heaviest case), a 5 % stop-loss and the default account rules, fills at the
decision's price. Measured: the wall time of `run_frame` and the bars, tape lines (bars, equity, signals,
fills) and decisions it handles per second.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from streams.backtest import run_frame

CONFIG: dict[str, Any] = {"risk": {"stops": {"default": {"stop_loss_pct": 0.05}}, "clusters": {"cap_pct": None}}}


def daily_bars(symbols: int, days: int, seed: int = 7) -> pd.DataFrame:
    """Daily OHLC of `symbols` names on `days` business days: market factor plus noise, lognormal."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2023-01-02", periods=days, freq="B", tz="UTC")
    market = rng.normal(0.0003, 0.01, days)
    beta = rng.uniform(0.6, 1.4, symbols)
    returns = market[:, None] * beta[None, :] + rng.normal(0, 0.015, (days, symbols))
    close = 50.0 * np.exp(np.cumsum(returns, axis=0)) * rng.uniform(0.5, 4.0, symbols)[None, :]
    open_ = close * np.exp(rng.normal(0, 0.004, (days, symbols)))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.006, (days, symbols))))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.006, (days, symbols))))
    names = [f"S{n:03d}" for n in range(symbols)]
    return pd.DataFrame(
        {
            "ts": np.repeat(dates, symbols),
            "symbol": np.tile(names, days),
            "open": open_.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "volume": 1e6,
        }
    )


def measure(symbols: int, days: int, seed: int = 7) -> dict[str, Any]:
    bars = daily_bars(symbols, days, seed)
    dates = pd.DatetimeIndex(sorted(bars["ts"].unique()))
    targets = pd.DataFrame(0.98 / symbols, index=dates, columns=sorted(bars["symbol"].unique()))
    started = time.perf_counter()
    result = run_frame(bars, targets, CONFIG, initial_balance=10_000_000)
    seconds = time.perf_counter() - started
    return {
        "metrics": {
            "backtest_frame_s_500x252": round(seconds, 2) if (symbols, days) == (500, 252) else None,
            "backtest_frame_bars_per_s": round(len(bars) / seconds),
            "backtest_frame_lines_per_s": round(len(result.lines) / seconds),
        },
        "tape": f"synthetic daily bars, {symbols} symbols x {days} days, dense equal-weight targets, seed {seed}",
        "bars": len(bars),
        "lines": len(result.lines),
        "decisions": len(result.ledger),
        "fills": len(result.fills),
        "halts": len(result.halts),
        "seconds": round(seconds, 2),
    }
