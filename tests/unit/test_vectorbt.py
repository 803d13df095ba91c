"""vectorbt with the guard in the loop: `to_vectorbt` replays the fills exactly, and the worked example
(examples/vectorbt_sp500.py) on the first 100 S&P 500 symbols of ../shared/data shows the re-entry paradox of
vectorbt's own stops and the guard's answer, with concrete figures."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt

from examples.vectorbt_sp500 import CSV, compare, guarded_value
from streams.backtest import read_bars_csv, run_frame, to_vectorbt
from tests.unit.test_backtest import STOPS, dense_targets, generated_bars


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def test_to_vectorbt_when_replayed_by_from_orders_then_vectorbt_value_equals_the_equity() -> None:
    bars = generated_bars(symbols=4, days=60, crash_day=30)
    targets = dense_targets(bars, 0.22)
    for fill in ("decision", "next_open"):
        result = run_frame(bars, targets, {"risk": STOPS}, fill=fill, commission_bps=5.0, slippage_bps=10.0)
        assert result.cash.min() > 0
        kwargs = to_vectorbt(result)
        assert kwargs["size_type"] == "amount" and kwargs["fees"] == pytest.approx(5e-4)
        portfolio = vbt.Portfolio.from_orders(**kwargs)
        value = portfolio.value().reindex(result.equity.index)
        assert np.allclose(value.to_numpy(), result.equity.to_numpy(), rtol=1e-9), fill
        assert int(portfolio.orders.count()) == len(result.fills)


def test_vectorbt_example_on_real_sp500_when_stops_then_paradox_in_vectorbt_and_not_in_the_guard(
    data_dir: Path,
) -> None:
    bars = read_bars_csv(data_dir / CSV)
    bars = bars[bars["symbol"].isin(sorted(bars["symbol"].unique())[:100])]
    comparison = compare(bars)
    figures = comparison.figures

    # Raw target weights rebalance every symbol every day; the guard trades a fraction of that.
    assert figures.loc["raw targets", "trades"] == 2600
    assert figures.loc["guarded (riskguard)", "trades"] == len(comparison.result.fills) == 676
    # The guard halts on the 5 Feb 2018 sell-off (3 % daily loss): flattened at that close.
    assert figures.loc["guarded (riskguard)", "halts"] == "05 Feb"
    assert list(comparison.result.halts["ts"].dt.strftime("%Y-%m-%d")) == ["2018-02-05", "2018-02-06"]
    flat = comparison.result.positions.loc[pd.Timestamp("2018-02-05", tz="UTC")]
    assert (flat == 0).all()
    assert figures.loc["guarded (riskguard)", "max drawdown %"] == pytest.approx(-7.16, abs=0.01)
    assert figures.loc["raw targets", "max drawdown %"] == pytest.approx(-7.97, abs=0.01)
    assert np.allclose(guarded_value(comparison.guarded, comparison.result), comparison.result.equity.to_numpy())

    # The re-entry paradox: vectorbt's own stops sell, then the still non-zero target buys back next bar.
    reentries = comparison.reentries
    assert len(reentries) == 42 and reentries["symbol"].nunique() == 35
    days = comparison.result.equity.index
    next_bar = {days[n]: days[n + 1] for n in range(len(days) - 1)}
    assert (reentries["rebought"] == reentries["stopped"].map(next_bar)).all()
    # The guard: 21 stop-outs, never bought back while the target stays non-zero (NOOP or reentry_veto).
    vetoed = comparison.vetoed
    assert len(vetoed) == 21 and int(vetoed["buys"].sum()) == 0
    assert (vetoed["target_days_after"] == vetoed["signals_held"]).all()
    ledger = comparison.result.ledger
    assert set(ledger.loc[ledger["reason"] == "reentry_veto", "action"]) == {"DENY"}
    assert (ledger["reason"] == "reentry_veto").sum() >= 1
