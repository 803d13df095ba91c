"""Level 2's risk figures: σ per symbol (VaR entry quota) and beta to the factor benchmark (SPEC §6.1, §6.2)."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.config import config_from_dict
from schemas.inputs import Bar
from streams.core.items import Item
from streams.core.levels.market.factor import betas, sigmas
from streams.core.levels.market.stage import MarketStage

NAN = float("nan")


def test_betas_when_symbol_moves_twice_the_benchmark_then_two_and_the_benchmark_one() -> None:
    bench = [0.01, -0.02, 0.03, 0.005]
    returns = np.array([[b, 2 * b, -b, 0.0] for b in bench])

    assert betas(returns, 0, 3).tolist() == pytest.approx([1.0, 2.0, -1.0, 0.0], abs=1e-12)


def test_betas_when_returns_missing_then_only_common_ones_count_and_too_few_give_one() -> None:
    returns = np.array(
        [
            [0.01, 0.02, NAN],
            [-0.02, NAN, 0.01],
            [0.03, 0.06, NAN],
            [0.01, 0.02, 0.02],
            [NAN, 0.5, 0.03],
        ]
    )

    beta = betas(returns, 0, 3)

    # Column 1 has 3 common returns (rows 0, 2, 3), each twice the benchmark's; column 2 only 2: beta 1.0.
    assert beta.tolist() == pytest.approx([1.0, 2.0, 1.0], abs=1e-12)


def test_betas_when_worked_by_hand_then_cov_over_var_with_ddof_1() -> None:
    b = [0.01, -0.02, 0.015, 0.0, -0.005]
    s = [0.02, -0.01, 0.01, 0.005, -0.02]
    expected = statistics.covariance(s, b) / statistics.variance(b)

    beta = betas(np.array(list(zip(b, s, strict=True))), 0, 2)

    assert beta[1] == pytest.approx(expected, rel=1e-12)
    assert round(expected, 4) == 0.8667


def test_betas_when_no_benchmark_or_a_flat_one_then_all_one() -> None:
    flat = np.array([[0.0, 0.01], [0.0, -0.02], [0.0, 0.03]])

    assert betas(flat, 0, 2).tolist() == [1.0, 1.0]
    assert betas(flat, None, 2).tolist() == [1.0, 1.0]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.floats(-0.2, 0.2) | st.just(NAN), min_size=3, max_size=3), min_size=0, max_size=12))
def test_sigmas_when_any_window_then_the_ddof1_stdev_of_the_finite_returns(rows: list[list[float]]) -> None:
    returns = np.array(rows, dtype=float).reshape(len(rows), 3)

    got = sigmas(returns, 3)

    for column in range(3):
        finite = [r[column] for r in rows if r[column] == r[column]]
        if len(finite) < 3:
            assert np.isnan(got[column])
        else:
            assert got[column] == pytest.approx(statistics.stdev(finite), rel=1e-9, abs=1e-15)


def _bar(symbol: str, day: int, close: float) -> Item:
    ts = 1_704_067_200_000 + day * 86_400_000
    return Item("bar", None, Bar(symbol=symbol, ts=ts, open=close, high=close, low=close, close=close, volume=1))


def test_market_stage_when_a_timestamp_completes_then_figures_sent_only_when_a_rule_needs_them() -> None:
    factor = config_from_dict({"risk": {"factor": {"benchmark": "B", "beta_window": 4, "min_periods": 2}}})
    plain = config_from_dict({})
    closes = {"B": [100, 101, 99, 102], "X": [50, 52.0, 48.0, 54.0]}

    def run(stage: MarketStage) -> list[Item]:
        sent: list[Item] = []
        for day in range(4):
            for symbol in ("B", "X"):
                sent += stage.process(_bar(symbol, day, closes[symbol][day]))[1]
        return [i for i in sent if i.kind == "market_figures"]

    figures = run(MarketStage(factor))

    assert run(MarketStage(plain)) == []
    assert len(figures) == 3  # days 0, 1 and 2 completed when the next day's first bar came
    last = figures[-1].notes
    assert last["beta"]["B"] == 1.0 and "sigma" not in last
    rb = [101 / 100 - 1, 99 / 101 - 1]
    rx = [52 / 50 - 1, 48 / 52 - 1]
    assert last["beta"]["X"] == pytest.approx(statistics.covariance(rx, rb) / statistics.variance(rb), rel=1e-12)


def test_market_stage_when_beta_window_longer_than_cluster_window_then_keeps_the_longer_history() -> None:
    config = config_from_dict(
        {
            "risk": {
                "clusters": {"window": 3, "min_periods": 2},
                "factor": {"benchmark": "B", "beta_window": 6, "min_periods": 2},
            }
        }
    )
    stage = MarketStage(config)
    for day in range(10):
        stage.process(_bar("B", day, 100 + day))

    assert stage.state.clusters.returns(6).shape == (6, 1)
    assert stage.state.clusters.returns(3).shape == (3, 1)
