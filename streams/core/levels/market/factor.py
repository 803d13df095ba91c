"""Level 2's risk figures per symbol: the volatility of the entry quota's VaR and the beta to a benchmark.

SPEC §6.1 (`daily_entry_quota.measure: var`): σ = the sample standard deviation (ddof 1) of the symbol's
simple returns in the cluster window; unknown (NaN) with fewer than `clusters.min_periods` returns.

SPEC §6.2 (seed 000 "Factor Neutrality"): beta = cov(r_s, r_b) / var(r_b) over the last `beta_window`
timestamps, on the returns both have there (ddof 1 in both); the benchmark's own beta is 1; fewer than
`factor.min_periods` common returns, a benchmark that has not moved, or no benchmark returns yet: 1.0.

Pure and vectorised (numpy over the whole returns matrix, no per-symbol Python loop); the sums run in a
fixed order, so the same window always gives the same bits.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def sigmas(returns: FloatArray, min_periods: int) -> FloatArray:
    """Per column: the ddof-1 standard deviation of its finite returns, NaN below `min_periods` of them."""
    if returns.size == 0:
        return np.full(returns.shape[1], np.nan)
    valid = np.isfinite(returns)
    count = valid.sum(axis=0)
    x = np.where(valid, returns, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = x.sum(axis=0) / count
        dev = np.where(valid, returns - mean, 0.0)
        var = (dev * dev).sum(axis=0) / (count - 1)
    return np.where(count >= max(min_periods, 2), np.sqrt(var), np.nan)


def betas(returns: FloatArray, benchmark: int | None, min_periods: int) -> FloatArray:
    """Per column: beta to column `benchmark` on their common finite returns; 1.0 where it is not defined."""
    n = returns.shape[1]
    out = np.ones(n)
    if benchmark is None or returns.size == 0:
        return out
    bench = returns[:, benchmark]
    valid = np.isfinite(returns) & np.isfinite(bench)[:, np.newaxis]
    count = valid.sum(axis=0)
    x = np.where(valid, returns, 0.0)
    b = np.where(valid, bench[:, np.newaxis], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x = x.sum(axis=0) / count
        mean_b = b.sum(axis=0) / count
        dx = np.where(valid, returns - mean_x, 0.0)
        db = np.where(valid, bench[:, np.newaxis] - mean_b, 0.0)
        cov = (dx * db).sum(axis=0)
        var_b = (db * db).sum(axis=0)
        beta = cov / var_b
    defined = (count >= max(min_periods, 2)) & (var_b > 0) & np.isfinite(beta)
    out = np.where(defined, beta, 1.0)
    out[benchmark] = 1.0
    return out
