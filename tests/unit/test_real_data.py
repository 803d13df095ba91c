"""The guards on real S&P 500 daily bars, Jan–Feb 2018, through the 5 Feb sell-off (../shared/data)."""

from __future__ import annotations

import csv
import itertools
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from streams.testing import TapeBuilder, TapeResult

BOOK = 1_000_000.0


def _closes(data_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    days: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    with (data_dir / "sp500_daily_2018-01-02_2018-02-07.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            days[row["date"]][row["symbol"]] = {k: float(row[k]) for k in ("open", "high", "low", "close")}
    return dict(sorted(days.items()))


def _equal_weight_session(data_dir: Path, late_signals: list[tuple[str, float]]) -> TapeBuilder:
    """All 505 names bought equal-weight at the first close, equity marked at each close."""
    days = _closes(data_dir)
    tape = TapeBuilder()
    shares: dict[str, float] = {}
    first = next(iter(days))
    for date, bars in days.items():
        ts = f"{date}T21:00:00Z"
        for symbol in sorted(bars):
            b = bars[symbol]
            low, high = min(b["low"], b["open"], b["close"]), max(b["high"], b["open"], b["close"])
            tape.bar(symbol, ts, b["open"], high, low, b["close"])
        if date == first:
            tape.equity("ew", f"{date}T20:59:00Z", BOOK)
            for symbol in sorted(bars):
                qty = BOOK / len(bars) / bars[symbol]["close"]
                shares[symbol] = qty
                tape.fill("ew", symbol, "BUY", qty, bars[symbol]["close"], ts, fill_id=f"init-{symbol}")
        equity = sum(q * bars.get(s, {"close": 0.0})["close"] for s, q in shares.items())
        tape.equity("ew", f"{date}T21:00:01Z", equity)
        if date == "2018-02-06":
            for number, (symbol, notional) in enumerate(late_signals):
                tape.signal("ew", symbol, f"{date}T21:00:02Z", signal_id=f"late{number}", target_notional=notional)
    return tape


def _run(data_dir: Path, profile: str, risk: dict[str, Any] | None = None, signals: Any = ()) -> TapeResult:
    config = {"accounts": {"ew": {"profile": profile, "initial_balance": BOOK, "risk": risk or {}}}}
    return _equal_weight_session(data_dir, list(signals)).run(config)


@pytest.fixture(scope="module")
def shared(request: pytest.FixtureRequest) -> Path:
    path = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    assert path.is_dir()
    return path


def test_equal_weight_book_when_standard_profile_then_sell_off_does_not_halt(shared: Path) -> None:
    result = _run(shared, "standard")

    assert result.halts == []  # -3.7 % on 5 Feb stays inside the 5 % daily limit


def test_equal_weight_book_when_high_leverage_then_halted_on_5_feb_and_flattened_then_reset(shared: Path) -> None:
    result = _run(shared, "high_leverage")

    assert [(h.state.value, h.reason, h.ts) for h in result.halts] == [
        ("HALTED", "daily_loss", 1517864401000),  # 2018-02-05T21:00:01Z
        ("ACTIVE", "day_reset", 1517950800000),  # first bar of 6 Feb
    ]
    halt = result.halts[0].facts
    assert round(halt.daily_loss_pct, 4) == 0.0371
    assert round(halt.day_start_equity) == 1_012_405
    flattens = [d for d in result.decisions if d.origin.value == "flatten"]
    assert len(flattens) == 505 and all(d.action.value == "ALLOW" and d.side.value == "SELL" for d in flattens)  # type: ignore[union-attr]


def test_equal_weight_book_when_trailing_six_pct_then_shutdown_on_5_feb(shared: Path) -> None:
    risk = {"account": {"trailing_drawdown": {"pct": 0.06, "mode": "intraday", "lock_at_initial": True}}}

    result = _run(shared, "standard", risk)

    assert [(h.state.value, h.reason, h.ts) for h in result.halts] == [("SHUTDOWN", "trailing_drawdown", 1517864401000)]
    # High-water mark 1,055,506 on 26 Jan; floor 995,506; 5 Feb equity 974,825.
    assert 974_000 < result.halts[0].facts.equity < 976_000


def test_cluster_map_when_sell_off_in_window_then_one_giant_cluster_denies_adding(shared: Path) -> None:
    result = _run(shared, "standard", signals=[("AAPL", 5_000.0)])

    maps = [e for e in result.events if e.kind == "cluster_map"]
    last = maps[-1].details
    assert last["largest"] > 450  # the sell-off makes nearly everything co-move (|rho| >= 0.7)
    (late,) = [d for d in result.decisions if d.origin.value == "signal"]
    assert (late.action.value, late.layer.value, late.reason) == ("DENY", "cluster", "cluster_cap")
    assert late.facts["cluster_exposure"] / late.facts["equity"] > 0.85


def test_cluster_map_when_market_demeaned_with_average_linkage_then_sector_like_clusters(shared: Path) -> None:
    risk = {"clusters": {"demean_market": True, "method": "average"}}

    # Cluster parameters are market-wide: they come from the file's risk.clusters.
    config = {
        "risk": risk,
        "accounts": {"ew": {"profile": "standard", "initial_balance": BOOK}},
    }
    result = _equal_weight_session(shared, [("AAPL", 5_000.0)]).run(config)

    last = [e for e in result.events if e.kind == "cluster_map"][-1].details
    assert last["largest"] < 100
    clusters = list(last["clusters"].values())
    assert any({"JPM", "BAC"} <= set(members) for members in clusters)
    (late,) = [d for d in result.decisions if d.origin.value == "signal"]
    assert late.facts["cluster_exposure"] / late.facts["equity"] < 0.25
    assert late.action.value in ("ALLOW", "CLIP") and late.layer.value != "cluster"


# ----------------------------------------------------------------- the risk budget on the 2018 sell-off
# The benchmark is an equal-weight index of all 505 names (first close = 100), published as bars of "EWI"
# at the same timestamp as the stocks, so the correlation matrix stays aligned.
SELL_OFF = 1517864400000  # 2018-02-05T21:00:00Z
NEXT_DAY = 1517950800000  # 2018-02-06T21:00:00Z


def _with_index(data_dir: Path, late_signals: list[tuple[str, float]]) -> TapeBuilder:
    days = _closes(data_dir)
    first = next(iter(days.values()))
    tape = _equal_weight_session(data_dir, late_signals)
    lines = []
    for line in tape.lines:
        value = line["value"]
        if line["topic"] == "equity" and value["ts"].endswith("T21:00:01Z"):
            bars = days[value["ts"][:10]]
            index = 100 * sum(bars[s]["close"] / first[s]["close"] for s in first if s in bars) / len(first)
            ts = value["ts"][:10] + "T21:00:00Z"
            bar = {"symbol": "EWI", "ts": ts, "open": index, "high": index, "low": index, "close": index}
            lines.append({"topic": "bars", "key": "EWI", "value": bar})
        lines.append(line)
    tape.lines = lines
    return tape


def _budget_run(data_dir: Path, budget: dict[str, Any], signals: Any = ()) -> TapeResult:
    config = {
        "risk": {"clusters": {"cap_pct": None}},
        "accounts": {"ew": {"profile": "standard", "initial_balance": BOOK}},
        "budget": {"enabled": True, "benchmark": "EWI", **budget},
    }
    return _with_index(data_dir, list(signals)).run(config)


def test_regime_classifier_when_5_feb_2018_sell_off_then_bear_and_budget_cap_denies_adding(shared: Path) -> None:
    result = _budget_run(shared, {}, signals=[("AAPL", 5_000.0)])

    regimes = [(e.ts, e.details["previous"], e.details["regime"]) for e in result.events if e.kind == "market_regime"]
    assert [(p, r) for _, p, r in regimes] == [(None, "bull"), ("bull", "bear")]
    assert [ts for ts, _, _ in regimes] == [1516222800000, SELL_OFF]  # 17 Jan (10th return), 5 Feb
    reading = next(e.details for e in result.events if e.kind == "market_regime" and e.details["regime"] == "bear")
    assert round(reading["drawdown"], 3) == 0.076  # 97.48 against the 26 Jan high of 105.55
    assert round(reading["vol"], 3) == 0.177  # 20 daily returns, annualized
    (change,) = [
        e for e in result.events if e.kind == "budget_recommendation" and e.details["trigger"] == "regime_change"
    ]
    assert (change.account, change.ts, change.details["source"]) == ("ew", SELL_OFF, "classifier")
    # 6 Feb: the equal-weight book (about 99 % invested) is far over the bear budget, 20 % of equity.
    (late,) = [d for d in result.decisions if d.origin.value == "signal"]
    assert (late.action.value, late.layer.value, late.reason) == ("DENY", "portfolio", "budget_cap")
    assert late.facts["regime"] == "bear"
    assert late.facts["budget_cap"] == pytest.approx(0.2 * late.facts["equity"])


def test_regime_classifier_when_crisis_drawdown_is_7_pct_then_crisis_on_5_feb(shared: Path) -> None:
    result = _budget_run(shared, {"classifier": {"crisis_drawdown": 0.07}})

    regimes = [(e.ts, e.details["regime"]) for e in result.events if e.kind == "market_regime"]
    # Drawdown 7.6 % on 5 Feb; the 6 Feb rebound (+1.3 %) brings it back to 6.4 %: bear again.
    assert regimes[1:] == [(SELL_OFF, "crisis"), (NEXT_DAY, "bear")]


def test_budget_triggers_when_sell_off_then_vol_breach_and_correlation_spike_once_each(shared: Path) -> None:
    result = _budget_run(shared, {"rebalancing_triggers": {"correlation_spike": 0.35, "drift_threshold": 1.0}})

    recommendations = [e for e in result.events if e.kind == "budget_recommendation"]
    by_trigger = {e.details["trigger"]: e for e in recommendations}
    assert sorted(e.details["trigger"] for e in recommendations) == ["correlation_spike", "regime_change", "vol_breach"]
    # The 5 Feb close enters the equity vol at the next day's roll: 17.7 % against 1.5 x 8 % (bear) = 12 %.
    vol = by_trigger["vol_breach"]
    assert vol.ts == NEXT_DAY and round(vol.details["observed"], 3) == 0.177
    assert vol.details["threshold"] == pytest.approx(0.12)
    # Mean |rho| of 505 names jumps from 0.29 to 0.41 when the 5 Feb returns complete (first bar of 6 Feb).
    spike = by_trigger["correlation_spike"]
    assert spike.ts == NEXT_DAY and round(spike.details["observed"], 2) == 0.41


def _beta_session(data_dir: Path, signals: list[tuple[str, float]]) -> tuple[TapeBuilder, list[float]]:
    """Every bar, an equal-weight index `EWD` (the mean simple return of the names, daily), and on 5 Feb
    after the close an empty account that sends `signals` (symbol, target notional) at the close."""
    days = _closes(data_dir)
    dates = list(days)
    index = [100.0]
    for before, after in itertools.pairwise(dates):
        common = [s for s in days[after] if s in days[before]]
        index.append(
            index[-1] * (1 + statistics.fmean(days[after][s]["close"] / days[before][s]["close"] - 1 for s in common))
        )
    tape = TapeBuilder()
    for number, date in enumerate(dates):
        ts = f"{date}T21:00:00Z"
        tape.flat_bar("EWD", ts, index[number])
        for symbol in sorted(days[date]):
            b = days[date][symbol]
            tape.bar(
                symbol,
                ts,
                b["open"],
                max(b["high"], b["open"], b["close"]),
                min(b["low"], b["open"], b["close"]),
                b["close"],
            )
        if date == "2018-02-05":
            tape.equity("beta", f"{date}T21:00:01Z", BOOK)
            for n, (symbol, notional) in enumerate(signals):
                price = days[date][symbol]["close"]
                tape.signal(
                    "beta", symbol, f"{date}T21:00:0{n + 2}Z", signal_id=f"s{n}", target_notional=notional, price=price
                )
    return tape, index


def test_beta_cap_when_5_feb_2018_then_betas_to_the_equal_weight_index_and_a_capped_book(shared: Path) -> None:
    config = {
        "risk": {
            "factor": {"benchmark": "EWD", "beta_window": 60, "min_periods": 15, "max_abs_beta_pct": 0.5},
            "clusters": {"cap_pct": None},
            "concentration": {"position": [5, 5], "group": [5, 5], "cluster": [5, 5]},
            "per_symbol": {"band_pct": 0.0},
        }
    }
    signals = [("NVDA", 600_000.0), ("DUK", 100_000.0), ("AMZN", -200_000.0)]
    tape, index = _beta_session(shared, signals)

    result = tape.run(config)

    on_5_feb = [d for d in result.decisions if d.origin.value == "signal"]
    assert [(d.symbol, d.action.value, d.side and d.side.value, d.qty, d.layer.value) for d in on_5_feb] == [
        ("NVDA", "CLIP", "BUY", 1291, "factor"),  # beta 1.81: 500,000 of beta exposure is 276,000 of NVDA
        ("DUK", "CLIP", "BUY", 19, "factor"),  # a utility (beta 0.17) fills the last 250 of the cap
        ("AMZN", "ALLOW", "SELL", 144, "per_symbol"),  # a short lowers the exposure: never clipped by it
    ]
    # The betas are those of the returns through 2 Feb (the 5 Feb row completes with the next bars).
    days = _closes(shared)
    dates = [d for d in days if d <= "2018-02-02"]
    bench = [b / a - 1 for a, b in itertools.pairwise(index[: len(dates)])]
    for decision, beta in zip(on_5_feb, (1.8114, 0.1698, 0.0477), strict=True):
        closes = [days[d][decision.symbol]["close"] for d in dates]
        own = [b / a - 1 for a, b in itertools.pairwise(closes)]
        expected = statistics.covariance(own, bench) / statistics.variance(bench)
        assert decision.facts["beta"] == pytest.approx(expected, rel=1e-9)
        assert round(decision.facts["beta"], 4) == beta
    assert on_5_feb[0].facts["beta_cap"] == 500_000
