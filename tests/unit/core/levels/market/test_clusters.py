"""Level-2 correlation clusters (streams.core.clusters): synthetic behaviour and real S&P 500 data."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from streams.core.levels.market.clusters import ClusterMap, ClusterParams, ClusterState

T0 = 1_700_000_000_000  # epoch ms of the first synthetic bar
STEP = 60_000  # one-minute bars
Bar = tuple[str, int, float]

DATA = Path(__file__).resolve().parents[5].parent / "shared" / "data"
SP500 = DATA / "sp500_daily_2018-01-02_2018-02-07.csv"
SECTORS = DATA / "sp500_sectors.csv"


# ----------------------------------------------------------------- helpers


def _closes(returns: np.ndarray) -> np.ndarray:
    """Close paths (rows = timestamps) starting at 100 from rows of simple returns."""
    start = np.full((1, returns.shape[1]), 100.0)
    return np.vstack([start, 100.0 * np.cumprod(1.0 + returns, axis=0)])


def _bars(symbols: list[str], closes: np.ndarray, first: int = 0) -> list[Bar]:
    """Bars in timestamp order (symbols alphabetical within a timestamp); NaN closes are skipped."""
    return [
        (s, T0 + (first + t) * STEP, float(closes[t, k]))
        for t in range(closes.shape[0])
        for k, s in enumerate(symbols)
        if np.isfinite(closes[t, k])
    ]


def _factor_market(n_ts: int = 41, seed: int = 7) -> tuple[list[str], np.ndarray]:
    """Two factor groups (A1..A4 and B1..B4, in-group rho about 0.96) and one independent symbol X."""
    rng = np.random.default_rng(seed)
    fa, fb = rng.normal(0.0, 0.01, n_ts - 1), rng.normal(0.0, 0.01, n_ts - 1)
    cols = {
        **{f"A{i}": fa + rng.normal(0.0, 0.002, n_ts - 1) for i in range(1, 5)},
        **{f"B{i}": fb + rng.normal(0.0, 0.002, n_ts - 1) for i in range(1, 5)},
        "X": rng.normal(0.0, 0.01, n_ts - 1),
    }
    symbols = sorted(cols)
    return symbols, _closes(np.column_stack([cols[s] for s in symbols]))


def _feed(state: ClusterState, bars: list[Bar], flush: bool = True) -> list[ClusterMap]:
    """Feed `bars` in the given order; return every map the state published."""
    maps = [m for s, ts, c in bars if (m := state.on_bar(s, ts, c)) is not None]
    if flush and (last := state.flush()) is not None:
        maps.append(last)
    return maps


def _groups(cmap: ClusterMap) -> set[tuple[str, ...]]:
    return set(cmap.members.values())


A_GROUP = ("A1", "A2", "A3", "A4")
B_GROUP = ("B1", "B2", "B3", "B4")
PARAMS = ClusterParams(window=30, min_periods=20, threshold=0.7)


# --------------------------------------------------------------- synthetic


def test_components_when_two_factor_groups_and_independent_symbol_then_two_groups_and_singleton() -> None:
    symbols, closes = _factor_market()
    state = ClusterState(PARAMS)

    cmap = _feed(state, _bars(symbols, closes))[-1]

    assert _groups(cmap) == {A_GROUP, B_GROUP, ("X",)}
    assert cmap.cluster_of("A3") == "c:A1"
    assert cmap.cluster_of("B4") == "c:B1"
    assert cmap.cluster_of("X") == "c:X"
    assert cmap.assignment == {**dict.fromkeys(A_GROUP, "c:A1"), **dict.fromkeys(B_GROUP, "c:B1"), "X": "c:X"}


@pytest.mark.parametrize("method", ["average", "complete"])
def test_recompute_when_linkage_method_then_same_groups_as_components(method: str) -> None:
    symbols, closes = _factor_market()
    state = ClusterState(ClusterParams(method=method))

    cmap = _feed(state, _bars(symbols, closes))[-1]

    assert _groups(cmap) == {A_GROUP, B_GROUP, ("X",)}


def test_recompute_when_symbol_anti_correlated_then_abs_rho_links_it() -> None:
    rng = np.random.default_rng(3)
    factor = rng.normal(0.0, 0.01, 35)
    returns = np.column_stack([factor + rng.normal(0.0, 0.002, 35), -factor + rng.normal(0.0, 0.002, 35)])
    state = ClusterState(PARAMS)

    cmap = _feed(state, _bars(["LONG", "SHORT"], _closes(returns)))[-1]

    rho = state.correlation("LONG", "SHORT")
    assert rho is not None and rho < -0.9
    assert cmap.cluster_of("SHORT") == cmap.cluster_of("LONG") == "c:LONG"


@pytest.mark.parametrize("method", ["components", "average", "complete"])
def test_recompute_when_symbol_has_fewer_than_min_periods_returns_then_singleton(method: str) -> None:
    symbols, closes = _factor_market(n_ts=41)
    late = closes.copy()
    late[:22, symbols.index("A4")] = np.nan  # A4 lists at row 22: 18 returns by the last row (40)
    state = ClusterState(ClusterParams(method=method))

    cmap = _feed(state, _bars(symbols, late))[-1]

    assert cmap.cluster_of("A4") == "c:A4"
    assert cmap.members["c:A4"] == ("A4",)
    assert cmap.cluster_of("A3") == "c:A1"
    assert state.correlation("A4", "A1") is None


def test_recompute_when_late_symbol_reaches_min_periods_then_it_joins_its_group() -> None:
    symbols, closes = _factor_market(n_ts=41)
    late = closes.copy()
    late[:20, symbols.index("A4")] = np.nan  # first close at row 20: returns from row 21 on
    state = ClusterState(PARAMS)

    maps = _feed(state, _bars(symbols, late))

    by_version = {m.version: m for m in maps}
    # version v completes row v-1, so A4 has v-21 returns: 19 at version 40, 20 at version 41.
    assert len(maps) == 41
    assert by_version[40].cluster_of("A4") == "c:A4"
    assert by_version[41].cluster_of("A4") == "c:A1"


def test_recompute_when_static_cluster_configured_then_it_overrides_dynamic_clusters() -> None:
    symbols, closes = _factor_market()
    params = ClusterParams(static=(("pair", ("A1", "B2", "UNSEEN")),))
    state = ClusterState(params)

    cmap = _feed(state, _bars(symbols, closes))[-1]

    assert cmap.members["s:pair"] == ("A1", "B2", "UNSEEN")
    assert cmap.cluster_of("A1") == cmap.cluster_of("B2") == cmap.cluster_of("UNSEEN") == "s:pair"
    # A1 leaves group A; the rest stays grouped and is renamed after its new smallest member.
    assert cmap.members["c:A2"] == ("A2", "A3", "A4")
    assert cmap.members["c:B1"] == ("B1", "B3", "B4")
    assert "c:A1" not in cmap.members


def test_current_when_no_timestamp_completed_then_version_zero_with_static_only() -> None:
    state = ClusterState(ClusterParams(static=(("idx", ("SPY", "QQQ")),)))

    first = state.on_bar("AAPL", T0, 100.0)

    assert first is None
    assert state.current == ClusterMap(
        version=0, ts=0, assignment={"QQQ": "s:idx", "SPY": "s:idx"}, members={"s:idx": ("QQQ", "SPY")}
    )
    assert state.current.cluster_of("AAPL") == "c:AAPL"
    assert state.correlation("AAPL", "SPY") is None
    assert state.mean_abs_correlation(["AAPL", "SPY"]) is None


@pytest.mark.parametrize("method", ["components", "average", "complete"])
def test_recompute_when_bars_shuffled_within_timestamps_then_same_maps_and_ids(method: str) -> None:
    symbols, closes = _factor_market()
    gaps = closes.copy()
    gaps[[5, 17, 30], symbols.index("B3")] = np.nan  # some missing bars exercise the masked path
    bars = _bars(symbols, gaps)
    shuffled: list[Bar] = []
    rng = random.Random(11)
    for ts in sorted({b[1] for b in bars}):
        block = [b for b in bars if b[1] == ts]
        rng.shuffle(block)
        shuffled.extend(block)
    ordered_state = ClusterState(ClusterParams(method=method))
    shuffled_state = ClusterState(ClusterParams(method=method))

    ordered_maps = _feed(ordered_state, bars)
    shuffled_maps = _feed(shuffled_state, shuffled)

    assert shuffled != bars
    assert shuffled_maps == ordered_maps
    assert shuffled_state.to_dict() == ordered_state.to_dict()
    assert _groups(ordered_maps[-1]) == {A_GROUP, B_GROUP, ("X",)}


def test_on_bar_when_timestamp_advances_then_version_increments_and_map_carries_completed_ts() -> None:
    state = ClusterState(PARAMS)

    during = [state.on_bar("A", T0, 10.0), state.on_bar("B", T0, 20.0)]
    first = state.on_bar("A", T0 + STEP, 11.0)
    same_ts = state.on_bar("B", T0 + STEP, 21.0)
    second = state.on_bar("A", T0 + 2 * STEP, 12.0)

    assert during == [None, None]
    assert same_ts is None
    assert first is not None and (first.version, first.ts) == (1, T0)
    assert second is not None and (second.version, second.ts) == (2, T0 + STEP)
    assert state.current is second
    assert second.assignment == {"A": "c:A", "B": "c:B"}


def test_flush_when_pending_timestamp_then_completes_it_once_and_later_bars_of_it_are_ignored() -> None:
    state = ClusterState(PARAMS)
    state.on_bar("A", T0, 10.0)
    state.on_bar("A", T0 + STEP, 11.0)

    flushed = state.flush()
    again = state.flush()
    late = state.on_bar("A", T0 + STEP, 99.0)
    snapshot = state.to_dict()

    assert flushed is not None and (flushed.version, flushed.ts) == (2, T0 + STEP)
    assert again is None
    assert late is None
    assert snapshot["pending_ts"] is None
    assert snapshot["returns"] == [[None], [pytest.approx(0.1)]]


def test_on_bar_when_older_than_pending_timestamp_then_ignored() -> None:
    state = ClusterState(PARAMS)
    state.on_bar("A", T0, 10.0)
    state.on_bar("A", T0 + 2 * STEP, 11.0)
    before = state.to_dict()

    result = state.on_bar("B", T0 + STEP, 50.0)

    assert result is None
    assert state.to_dict() == before
    assert "B" not in state.current.assignment


def test_on_bar_when_same_symbol_and_ts_resent_then_last_close_wins() -> None:
    corrected, clean = ClusterState(PARAMS), ClusterState(PARAMS)

    _feed(corrected, [("A", T0, 10.0), ("A", T0 + STEP, 99.0), ("A", T0 + STEP, 11.0)])
    _feed(clean, [("A", T0, 10.0), ("A", T0 + STEP, 11.0)])

    assert corrected.to_dict() == clean.to_dict()
    assert corrected.to_dict()["returns"] == [[None], [pytest.approx(0.1)]]


def test_correlation_when_bars_missing_then_matches_pairwise_complete_pearson() -> None:
    symbols, closes = _factor_market(n_ts=31)
    gaps = closes.copy()
    gaps[[3, 4, 12], symbols.index("A2")] = np.nan
    gaps[[4, 20], symbols.index("B1")] = np.nan
    state = ClusterState(ClusterParams(window=30, min_periods=20))

    _feed(state, _bars(symbols, gaps))

    def spec_returns(col: np.ndarray) -> np.ndarray:
        # close / previous close of the symbol - 1, NaN where the symbol has no bar or no earlier close
        out, prev = np.full(col.size - 1, np.nan), col[0]
        for t in range(1, col.size):
            if np.isfinite(col[t]):
                out[t - 1] = col[t] / prev - 1.0 if np.isfinite(prev) else np.nan
                prev = col[t]
        return out

    a, b = spec_returns(gaps[:, symbols.index("A2")]), spec_returns(gaps[:, symbols.index("B1")])
    both = np.isfinite(a) & np.isfinite(b)
    expected = float(np.corrcoef(a[both], b[both])[0, 1])
    assert int(both.sum()) == 26  # 30 returns minus the 4 rows where one of the two has a gap
    assert state.correlation("A2", "B1") == pytest.approx(expected, abs=1e-12)
    assert state.correlation("B1", "A2") == state.correlation("A2", "B1")


@pytest.mark.parametrize("demean", [False, True])
def test_correlation_when_many_random_gaps_then_every_pair_matches_a_pairwise_loop(demean: bool) -> None:
    rng = np.random.default_rng(21)
    symbols = [f"S{i:02d}" for i in range(12)]
    closes = _closes(rng.normal(0.0, 0.01, (30, 12)) + rng.normal(0.0, 0.01, (30, 1)))
    gaps = rng.random(closes.shape) < 0.12
    gaps[:, :2] = False  # S00 and S01 have no gaps: full-vs-gapped pairs are read from both sides
    closes[gaps] = np.nan
    state = ClusterState(ClusterParams(window=30, min_periods=15, demean_market=demean))
    _feed(state, _bars(symbols, closes))
    snapshot_rows: list[list[float | None]] = state.to_dict()["returns"]  # type: ignore[assignment]
    returns = np.array([[np.nan if v is None else v for v in row] for row in snapshot_rows])
    if demean:  # reference: subtract each timestamp's mean over the symbols that have a return
        present = np.isfinite(returns)
        returns = returns - np.where(present, returns, 0.0).sum(axis=1, keepdims=True) / np.maximum(
            present.sum(axis=1, keepdims=True), 1
        )

    checked = 0
    for i, a in enumerate(symbols):
        for j, b in enumerate(symbols):
            both = np.isfinite(returns[:, i]) & np.isfinite(returns[:, j])
            expected = float(np.corrcoef(returns[both, i], returns[both, j])[0, 1]) if both.sum() >= 15 else None
            got = state.correlation(a, b)
            assert (got is None) == (expected is None), (a, b)
            if got is not None and expected is not None:
                assert got == pytest.approx(expected, abs=1e-12), (a, b)
                checked += 1

    gapped = int((~np.isfinite(returns[1:])).any(axis=0).sum())
    assert gapped == 10 and checked >= 100  # gapped columns dominate and most pairs are still valid


def test_mean_abs_correlation_when_symbols_given_then_averages_abs_rho_over_distinct_valid_pairs() -> None:
    symbols, closes = _factor_market()
    state = ClusterState(PARAMS)
    _feed(state, _bars(symbols, closes))
    pairs = [("A1", "A2"), ("A1", "X"), ("A2", "X")]
    expected = np.mean([abs(state.correlation(p, q) or 0.0) for p, q in pairs])

    result = state.mean_abs_correlation(["X", "A2", "A1", "A1", "UNKNOWN"])

    assert result == pytest.approx(expected, abs=1e-15)
    assert state.mean_abs_correlation(["A1"]) is None
    assert state.mean_abs_correlation(["A1", "UNKNOWN"]) is None


def test_recompute_when_old_rows_leave_window_then_their_correlation_is_forgotten() -> None:
    rng = np.random.default_rng(5)
    factor = rng.normal(0.0, 0.01, 30)
    together = np.column_stack([factor, factor + rng.normal(0.0, 0.001, 30)])
    # Small independent moves: over all 55 rows the pair would still show rho > 0.9.
    apart = rng.normal(0.0, 0.002, (25, 2))
    closes = _closes(np.vstack([together, apart]))
    state = ClusterState(ClusterParams(window=25, min_periods=20))

    maps = _feed(state, _bars(["P", "Q"], closes))

    by_version = {m.version: m for m in maps}
    assert by_version[31].cluster_of("Q") == "c:P"  # rows 1..30 co-move
    assert maps[-1].version == 56
    assert len(state.to_dict()["returns"]) == 25  # type: ignore[arg-type]
    assert maps[-1].cluster_of("Q") == "c:Q"  # the window now holds only the independent rows
    assert abs(state.correlation("P", "Q") or 1.0) < 0.7


@pytest.mark.parametrize("method", ["components", "average", "complete"])
def test_recompute_when_pair_has_fewer_than_min_periods_common_returns_then_not_linked(method: str) -> None:
    rng = np.random.default_rng(13)
    factor = rng.normal(0.0, 0.01, 30)
    returns = np.column_stack([factor, factor, rng.normal(0.0, 0.01, 30)])
    closes = _closes(returns)
    closes[23:, 0] = np.nan  # P trades rows 0..22: 22 returns
    closes[:8, 1] = np.nan  # Q trades rows 8..30: 22 returns, only 14 of them at P's timestamps
    state = ClusterState(ClusterParams(window=30, min_periods=20, method=method))

    cmap = _feed(state, _bars(["P", "Q", "R"], closes))[-1]

    assert state.correlation("P", "Q") is None
    assert state.correlation("P", "R") is not None and state.correlation("Q", "R") is not None
    assert _groups(cmap) == {("P",), ("Q",), ("R",)}


def test_recompute_when_common_market_factor_then_demean_market_separates_groups() -> None:
    rng = np.random.default_rng(9)
    market = rng.normal(0.0, 0.02, 30)
    factor = {"A": rng.normal(0.0, 0.006, 30), "B": rng.normal(0.0, 0.006, 30)}
    others = [f"X{i:02d}" for i in range(12)]
    names = [*A_GROUP, *B_GROUP, *others]
    # X* carry only the market and their own noise. They are needed: with the two groups alone, each
    # group minus the cross-sectional mean is the mirror image of the other (rho -1, which |rho| links).
    cols = [market + factor.get(s[0], 0.0) + rng.normal(0.0, 0.006 if s[0] == "X" else 0.001, 30) for s in names]
    bars = _bars(names, _closes(np.column_stack(cols)))
    raw, demeaned = ClusterState(PARAMS), ClusterState(ClusterParams(demean_market=True))

    raw_map = _feed(raw, bars)[-1]
    demeaned_map = _feed(demeaned, bars)[-1]

    assert _groups(raw_map) == {tuple(sorted(names))}  # the market factor links everything
    assert _groups(demeaned_map) == {A_GROUP, B_GROUP, *((x,) for x in others)}


@pytest.mark.parametrize("method", ["components", "average", "complete"])
def test_from_dict_when_round_tripped_through_json_then_later_maps_are_identical(method: str) -> None:
    symbols, closes = _factor_market()
    gaps = closes.copy()
    gaps[[2, 25], symbols.index("X")] = np.nan
    bars = _bars(symbols, gaps)
    cut = len(bars) * 2 // 3 + 3  # mid-timestamp: the snapshot carries a partly filled pending row
    params = ClusterParams(method=method, static=(("s", ("B4",)),))
    original = ClusterState(params)
    _feed(original, bars[:cut], flush=False)

    snapshot = json.loads(json.dumps(original.to_dict(), allow_nan=False))
    restored = ClusterState.from_dict(params, snapshot)

    assert restored.current == original.current
    assert restored.to_dict() == original.to_dict()
    assert restored.correlation("A1", "A2") == original.correlation("A1", "A2")
    assert _feed(restored, bars[cut:]) == _feed(original, bars[cut:])
    assert restored.to_dict() == original.to_dict()


def test_from_dict_when_fresh_state_then_round_trips_version_zero() -> None:
    params = ClusterParams(static=(("idx", ("SPY",)),))

    restored = ClusterState.from_dict(params, json.loads(json.dumps(ClusterState(params).to_dict())))

    assert restored.current == ClusterState(params).current
    assert restored.to_dict() == ClusterState(params).to_dict()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "ward"},
        {"window": 10, "min_periods": 20},
        {"threshold": 0.0},
        {"threshold": float("nan")},
        {"static": (("a", ("X",)), ("b", ("X",)))},
        {"static": (("a", ()),)},
    ],
)
def test_params_when_invalid_then_value_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ClusterParams(**kwargs)  # type: ignore[arg-type]


def test_on_bar_when_close_not_positive_finite_then_value_error() -> None:
    state = ClusterState(PARAMS)

    with pytest.raises(ValueError):
        state.on_bar("A", T0, 0.0)
    with pytest.raises(ValueError):
        state.on_bar("A", T0, float("nan"))


# ------------------------------------------------------- real S&P 500 data


def _epoch_ms(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)


@cache
def _sp500_bars() -> tuple[Bar, ...]:
    with SP500.open(newline="") as fh:
        rows = [(r["date"], r["symbol"], float(r["close"])) for r in csv.DictReader(fh)]
    rows.sort()  # date order; alphabetical within a date (the state must not care)
    return tuple((symbol, _epoch_ms(day), close) for day, symbol, close in rows)


@cache
def _sectors() -> dict[str, str]:
    with SECTORS.open(newline="") as fh:
        return {r["symbol"]: r["sector"] for r in csv.DictReader(fh)}


@cache
def _sp500_run(method: str, demean: bool) -> tuple[ClusterState, tuple[ClusterMap, ...]]:
    state = ClusterState(ClusterParams(window=30, min_periods=20, threshold=0.7, method=method, demean_market=demean))
    return state, tuple(_feed(state, list(_sp500_bars())))


def _largest(cmap: ClusterMap) -> int:
    return max(len(m) for m in cmap.members.values())


def test_sp500_when_components_on_raw_returns_then_sell_off_puts_464_of_505_in_one_cluster() -> None:
    state, maps = _sp500_run("components", False)

    last = maps[-1]

    # 26 trading days -> 26 recomputes; the last is at 2018-02-07 with 25 returns per symbol.
    assert [m.version for m in maps] == list(range(1, 27))
    assert last.ts == _epoch_ms("2018-02-07")
    assert len(last.assignment) == 505
    assert _largest(last) == 464
    assert len(last.members) == 39
    # Version v holds v - 1 returns: nothing links before min_periods = 20 returns (version 21).
    assert all(len(m.members) == 505 for m in maps[:20])
    assert _largest(maps[20]) > 1
    # Unrelated businesses share the cluster, even anti-correlated ones, through chains of links.
    assert last.cluster_of("XOM") == last.cluster_of("AAPL") == last.cluster_of("DUK") == last.cluster_of("JPM")
    assert state.mean_abs_correlation(last.assignment) == pytest.approx(0.3960, abs=5e-4)


def test_sp500_when_correlation_read_then_matches_numpy_on_the_csv_closes() -> None:
    state, _ = _sp500_run("components", False)
    closes: dict[str, list[float]] = {"JPM": [], "BAC": []}
    for symbol, _ts, close in _sp500_bars():
        if symbol in closes:
            closes[symbol].append(close)
    jpm, bac = (np.diff(np.array(closes[s])) / np.array(closes[s][:-1]) for s in ("JPM", "BAC"))

    rho = state.correlation("JPM", "BAC")

    assert rho == pytest.approx(float(np.corrcoef(jpm, bac)[0, 1]), abs=1e-12)
    assert rho == pytest.approx(0.933, abs=5e-4)


def test_sp500_when_average_linkage_on_raw_returns_then_sector_like_clusters() -> None:
    _, maps = _sp500_run("average", False)
    last, sectors = maps[-1], _sectors()

    energy = last.members[last.cluster_of("APA")]
    utilities = last.members[last.cluster_of("DUK")]

    assert _largest(last) == 32
    assert len(last.members) == 183
    assert len(energy) == 16 and {sectors[s] for s in energy} == {"Energy"}
    assert len(utilities) == 15 and {sectors[s] for s in utilities} == {"Utilities"}
    assert last.cluster_of("JPM") == last.cluster_of("BAC") == last.cluster_of("C")
    assert last.cluster_of("JPM") != last.cluster_of("DUK")


def test_sp500_when_market_demeaned_components_then_smaller_but_still_chained_clusters() -> None:
    state, maps = _sp500_run("components", True)
    last = maps[-1]
    duk_jpm = state.correlation("DUK", "JPM")

    assert _largest(last) == 91
    assert len(last.members) == 293
    assert state.mean_abs_correlation(last.assignment) == pytest.approx(0.1895, abs=5e-4)
    # Single-link chaining with |rho| still joins utilities and big banks, which are anti-correlated
    # once the market is removed.
    assert duk_jpm is not None and duk_jpm < -0.35
    assert last.cluster_of("DUK") == last.cluster_of("JPM")


def test_sp500_when_market_demeaned_average_linkage_then_many_small_sector_clusters() -> None:
    _, maps = _sp500_run("average", True)
    last, sectors = maps[-1], _sectors()

    sizes = Counter(len(m) for m in last.members.values())
    utilities = last.members[last.cluster_of("DUK")]

    assert _largest(last) == 22
    assert len(last.members) == 361
    assert sizes[1] == 284
    assert len(utilities) == 22
    assert sum(sectors.get(s) == "Utilities" for s in utilities) == 21  # ARE has no sector in the file
    assert last.members[last.cluster_of("JPM")] == ("BAC", "C", "JPM")
    assert last.members[last.cluster_of("DAL")] == ("AAL", "DAL", "LUV", "UAL")
    assert last.cluster_of("GOOG") == last.cluster_of("GOOGL")
    assert last.cluster_of("DUK") != last.cluster_of("JPM")


def test_sp500_when_market_demeaned_complete_linkage_then_largest_cluster_is_utilities_of_13() -> None:
    _, maps = _sp500_run("complete", True)
    last, sectors = maps[-1], _sectors()

    largest = max(last.members.values(), key=len)

    assert len(largest) == 13
    assert {sectors[s] for s in largest} == {"Utilities"}
    assert last.members[last.cluster_of("JPM")] == ("BAC", "JPM")


def test_cluster_cap_when_static_cluster_and_no_map_published_yet_then_it_binds_from_the_first_event() -> None:
    from streams.core.ids import decision_id
    from streams.testing import TapeBuilder

    config = {
        "risk": {
            "per_trade": {"max_notional": 1_000_000, "lot_size": 1, "min_order_notional": 0},
            "per_symbol": {"default_cap": 1_000_000, "band_pct": 0.01},
            "portfolio": {"gross_cap": 10_000_000, "net_cap": 10_000_000},
            "clusters": {"static": {"tech": ["AAA", "BBB"]}, "cap_pct": 0.25},
        }
    }
    tape = TapeBuilder().equity("A1", "2024-01-02T15:00:00Z", 100_000)
    tape.flat_bar("AAA", "2024-01-02T15:00:00Z", 100.0).flat_bar("BBB", "2024-01-02T15:00:00Z", 50.0)
    tape.signal("A1", "AAA", "2024-01-02T15:00:10Z", signal_id="aaa", target_notional=20_000)
    first = decision_id("A1", "signal", "aaa", "AAA")
    tape.fill("A1", "AAA", "BUY", 200, 100.0, "2024-01-02T15:00:11Z", fill_id="f1", decision_id=first)
    tape.signal("A1", "BBB", "2024-01-02T15:00:20Z", signal_id="bbb", target_notional=20_000)
    result = tape.run(config)

    kinds = [getattr(o.value, "kind", None) or getattr(o.value, "source_id", None) for o in result.outputs]
    assert kinds.index("bbb") < kinds.index("cluster_map")  # the first map only comes at the end of the tape
    bbb = next(d for d in result.decisions if d.source_id == "bbb")
    assert (bbb.action.value, bbb.layer.value, bbb.facts["cluster_id"]) == ("CLIP", "cluster", "s:tech")
    assert bbb.notional == pytest.approx(5_000.0, abs=50.0)  # 25 % of 100k less AAA's 20k
