"""Synthetic tape generator (streams.gen): determinism, validity, market model, fills and equity."""

from __future__ import annotations

import io
import itertools
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import numpy as np
import pytest

from schemas.config import config_from_dict, load_config
from schemas.inputs import Bar, Equity, Fill, Signal
from schemas.outputs import Decision
from streams.core.engine import Engine
from streams.gen import (
    SECTORS,
    GenParams,
    generate,
    shock_day,
    symbol_names,
    symbol_sectors,
    trading_days,
    write_tape,
)
from streams.tape import INPUT_TOPICS, decode_line

MAIN = GenParams(symbols=30, accounts=5, days=2, seed=11)
SMALL = GenParams(symbols=12, accounts=3, days=1, seed=5)
TOPIC_RANK = {"bars": 0, "fills": 1, "equity": 2, "signals": 3}


@dataclass(frozen=True)
class Run:
    """A generated tape, its decoded events, and the decisions a fresh engine makes on it."""

    lines: list[bytes]
    events: list[tuple[str, str | None, Any]]
    decisions: dict[str, tuple[int, Decision]]  # decision id -> (line index of its trigger, decision)


@cache
def run(params: GenParams) -> Run:
    """Generate once per parameter set and replay the tape through a fresh engine."""
    lines = list(generate(params))
    engine = Engine(load_config(None))
    events = []
    decisions: dict[str, tuple[int, Decision]] = {}
    for index, line in enumerate(lines):
        topic, key, value = decode_line(line)
        events.append((topic, key, value))
        for output in engine.process(topic, value):
            if isinstance(output.value, Decision):
                decisions[output.value.decision_id] = (index, output.value)
    return Run(lines, events, decisions)


def values(topic: str, params: GenParams = MAIN) -> list[Any]:
    return [value for t, _, value in run(params).events if t == topic]


# ----------------------------------------------------------------- determinism


def test_generate_when_same_seed_then_identical_bytes() -> None:
    first = b"".join(run(SMALL).lines)
    second = b"".join(generate(SMALL))

    assert first == second
    assert len(first) > 0


def test_generate_when_different_seed_then_different_bytes() -> None:
    base = b"".join(run(SMALL).lines)
    other = b"".join(generate(GenParams(symbols=12, accounts=3, days=1, seed=6)))

    assert base != other


def test_generate_when_accounts_change_then_market_bars_are_unchanged() -> None:
    with_accounts = [line for line in run(SMALL).lines if line.startswith(b'{"topic":"bars"')]
    without = list(generate(GenParams(symbols=12, accounts=0, days=1, seed=5)))

    assert with_accounts == without


# ----------------------------------------------------------------- validity and layout


def test_generate_when_decoded_then_every_line_is_a_valid_input_envelope() -> None:
    r = run(MAIN)

    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in r.lines)
    for topic, key, value in r.events:
        assert topic in INPUT_TOPICS
        assert key == (value.symbol if topic == "bars" else value.account)
    assert {topic for topic, _, _ in r.events} == {"bars", "fills", "equity", "signals"}


def test_generate_when_bars_emitted_then_ohlc_consistent_positive_and_complete() -> None:
    bars: list[Bar] = values("bars")

    assert len(bars) == MAIN.symbols * MAIN.days * MAIN.bars_per_day
    for bar in bars:
        assert 0 < bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.volume > 0
    per_ts: dict[int, list[str]] = defaultdict(list)
    for bar in bars:
        per_ts[bar.ts].append(bar.symbol)
    assert all(symbols == symbol_names(MAIN) for symbols in per_ts.values())


def test_generate_when_timestamps_read_then_weekday_sessions_in_order() -> None:
    params = GenParams(symbols=2, accounts=2, days=2, start="2024-01-05", session_minutes=30)
    events: list[tuple[str, str | None, Any]] = [decode_line(line) for line in generate(params)]
    bar_ts = sorted({value.ts for topic, _, value in events if topic == "bars"})

    opens = [datetime.fromtimestamp(ts / 1000, tz=UTC) for ts in bar_ts[:: params.bars_per_day]]
    assert [d.date().isoformat() for d in opens] == ["2024-01-05", "2024-01-08"]  # Fri, then Mon
    assert all((d.hour, d.minute) == (14, 30) for d in opens)  # 09:30 EST
    assert [b - a for a, b in itertools.pairwise(bar_ts)][:29] == [60_000] * 29
    order = [(value.ts, TOPIC_RANK[topic], key or "") for topic, key, value in events]
    assert [(ts, rank) for ts, rank, _ in order] == sorted((ts, rank) for ts, rank, _ in order)
    assert [o for o in order if o[1] == 0] == sorted(o for o in order if o[1] == 0)


def test_trading_days_when_summer_start_then_session_opens_at_1330_utc() -> None:
    params = GenParams(symbols=1, accounts=0, days=1, start="2024-07-01", session_minutes=1)
    (line,) = list(generate(params))
    _, _, bar = decode_line(line)
    assert isinstance(bar, Bar)

    assert trading_days(params)[0].isoformat() == "2024-07-01"
    assert datetime.fromtimestamp(bar.ts / 1000, tz=UTC).strftime("%H:%M") == "13:30"  # 09:30 EDT


def test_generate_when_signals_emitted_then_ids_unique_and_all_target_kinds_present() -> None:
    signals: list[Signal] = values("signals")

    assert len({s.signal_id for s in signals}) == len(signals)
    assert any(s.target_notional is not None for s in signals)
    assert any(s.target_weight is not None for s in signals)
    assert any(s.direction is not None for s in signals)
    assert any(s.target_weight is not None and abs(s.target_weight) > 0.08 for s in signals)


# ----------------------------------------------------------------- fills follow decisions


def test_generate_when_engine_allows_or_clips_then_each_decision_is_filled_later_at_its_qty() -> None:
    r = run(MAIN)
    bar_ts = sorted({value.ts for topic, _, value in r.events if topic == "bars"})
    filled: dict[str, int] = {}
    for index, (topic, _, fill) in enumerate(r.events):
        if topic != "fills":
            continue
        assert fill.decision_id in r.decisions
        trigger, decision = r.decisions[fill.decision_id]
        assert trigger < index
        assert decision.action in ("ALLOW", "CLIP")
        assert (fill.account, fill.symbol, fill.side, fill.qty) == (
            decision.account,
            decision.symbol,
            decision.side,
            decision.qty,
        )
        assert bar_ts.index(fill.ts) == bar_ts.index(decision.ts) + MAIN.fill_delay_bars
        filled[fill.decision_id] = filled.get(fill.decision_id, 0) + 1
    eligible = {
        did
        for did, (_, d) in r.decisions.items()
        if d.action in ("ALLOW", "CLIP") and d.qty > 0 and d.ts < bar_ts[-MAIN.fill_delay_bars]
    }
    assert eligible
    assert set(filled) == eligible
    assert set(filled.values()) == {1}


def test_generate_when_fills_priced_then_inside_the_bar_range_with_a_fee() -> None:
    r = run(MAIN)
    bars: dict[tuple[str, int], Bar] = {}
    for topic, _, value in r.events:
        if topic == "bars":
            bars[(value.symbol, value.ts)] = value
    fills: list[Fill] = values("fills")

    assert fills
    for fill in fills:
        bar = bars[(fill.symbol, fill.ts)]
        assert bar.low <= fill.price <= bar.high
        assert abs(fill.price - bar.open) <= 0.002 * bar.open + 0.01
        assert 0 < fill.fee <= 0.01 * fill.qty * fill.price + 0.01


def test_generate_when_config_caps_trades_then_signal_fills_stay_under_the_cap() -> None:
    config = config_from_dict({"risk": {"per_trade": {"max_notional": 20_000}}})
    engine = Engine(config)
    decisions: dict[str, Decision] = {}
    checked = 0
    for line in generate(SMALL, config):
        topic, _, value = decode_line(line)
        for output in engine.process(topic, value):
            if isinstance(output.value, Decision):
                decisions[output.value.decision_id] = output.value
        if isinstance(value, Fill) and value.decision_id is not None:
            decision = decisions[value.decision_id]
            before = decision.facts["filled_qty"] + decision.facts["pending_qty"]
            opening = before == 0 or (before > 0) == (value.side == "BUY")
            if decision.origin in ("signal", "cadence") and opening:
                # Risk-reducing parts are never clipped; unclipped trades round to the nearest lot.
                assert value.qty * decision.price <= 20_000 + decision.price
                checked += 1

    assert checked > 0
    assert any(d.action == "CLIP" and d.layer == "per_trade" for d in decisions.values())


# ----------------------------------------------------------------- equity marked to market


def test_generate_when_equity_reported_then_equals_cash_plus_positions_at_last_close() -> None:
    cash: dict[str, float] = defaultdict(lambda: MAIN.initial_equity)
    qty: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    close: dict[str, float] = {}
    reports = 0
    for _, _, value in run(MAIN).events:
        if isinstance(value, Bar):
            close[value.symbol] = value.close
        elif isinstance(value, Fill):
            signed = value.signed_qty
            cash[value.account] -= signed * value.price + value.fee
            qty[value.account][value.symbol] += signed
        elif isinstance(value, Equity):
            marked = cash[value.account] + sum(q * close[s] for s, q in qty[value.account].items())
            assert value.equity == pytest.approx(marked, abs=0.011)
            assert value.cash == pytest.approx(cash[value.account], abs=0.006)
            reports += 1

    assert reports >= MAIN.accounts * MAIN.days * MAIN.bars_per_day // MAIN.equity_every
    assert any(q != 0 for book in qty.values() for q in book.values())


def test_generate_when_balance_reported_then_equals_initial_plus_realised_minus_fees() -> None:
    book: dict[tuple[str, str], tuple[float, float]] = {}  # (account, symbol) -> (qty, avg entry)
    realised: dict[str, float] = defaultdict(float)
    for _, _, value in run(MAIN).events:
        if isinstance(value, Fill):
            held, avg = book.get((value.account, value.symbol), (0.0, 0.0))
            signed = value.signed_qty
            realised[value.account] -= value.fee
            if held == 0 or (held > 0) == (signed > 0):
                avg = (abs(held) * avg + abs(signed) * value.price) / abs(held + signed)
            else:
                closing = min(abs(signed), abs(held))
                realised[value.account] += (value.price - avg) * closing * (1 if held > 0 else -1)
                if (held + signed > 0) != (held > 0):
                    avg = value.price
            book[(value.account, value.symbol)] = (held + signed, avg)
        elif isinstance(value, Equity):
            assert value.balance == pytest.approx(MAIN.initial_equity + realised[value.account], abs=0.011)


def test_generate_when_day_starts_then_every_account_reports_equity_on_its_first_bar() -> None:
    first_bars = {b.ts for b in values("bars")[:: MAIN.symbols * MAIN.bars_per_day]}
    equity: list[Equity] = values("equity")

    for ts in first_bars:
        assert sorted(e.account for e in equity if e.ts == ts) == [f"A{i:03d}" for i in range(MAIN.accounts)]


# ----------------------------------------------------------------- market model


def closes_matrix(params: GenParams) -> np.ndarray:
    """Closes with rows = bars and columns = symbols, read back from the tape."""
    bars: list[Bar] = values("bars", params)
    return np.array([b.close for b in bars]).reshape(-1, params.symbols)


def test_generate_when_closes_measured_then_within_sector_correlation_exceeds_cross_sector() -> None:
    closes = closes_matrix(MAIN)
    returns = np.diff(np.log(closes), axis=0)
    day_edges = np.arange(MAIN.bars_per_day - 1, returns.shape[0], MAIN.bars_per_day)
    returns = np.delete(returns, day_edges, axis=0)  # drop the overnight gaps
    rho = np.corrcoef(returns.T)
    sectors = np.array([SECTORS.index(s) for s in symbol_sectors(MAIN).values()])
    same = sectors[:, None] == sectors[None, :]
    off_diagonal = ~np.eye(MAIN.symbols, dtype=bool)

    within = rho[same & off_diagonal].mean()
    cross = rho[~same].mean()
    assert within > 0.45
    assert 0.1 < cross < within - 0.2


def test_generate_when_closes_measured_then_daily_vol_is_one_to_two_percent() -> None:
    closes = closes_matrix(MAIN)
    returns = np.diff(np.log(closes), axis=0)
    daily_vol = returns.std(axis=0) * np.sqrt(MAIN.bars_per_day)

    assert 0.007 < np.median(daily_vol) < 0.025
    assert np.all(daily_vol < 0.04)


def test_generate_when_three_days_then_middle_day_sells_off() -> None:
    params = GenParams(symbols=22, accounts=0, days=3, seed=3, bar_seconds=300)
    closes = closes_matrix(params)
    opens = np.array([b.open for b in values("bars", params)]).reshape(-1, params.symbols)
    n = params.bars_per_day
    day_returns = [np.mean(closes[(d + 1) * n - 1] / opens[d * n] - 1) for d in range(params.days)]

    assert shock_day(params) == 1
    assert day_returns[1] < -0.025
    assert min(day_returns[0], day_returns[2]) > day_returns[1] + 0.01


def test_symbol_sectors_when_dealt_then_round_robin_over_eleven_sectors() -> None:
    sectors = symbol_sectors(GenParams(symbols=23))

    assert list(sectors)[:2] == ["S000", "S001"]
    assert sectors["S000"] == sectors["S011"] == sectors["S022"] == SECTORS[0]
    assert len(set(sectors.values())) == 11


# ----------------------------------------------------------------- write_tape and parameters


def test_write_tape_when_called_then_writes_the_generated_lines_and_reports_progress() -> None:
    sink = io.BytesIO()
    seen: list[int] = []

    count = write_tape(SMALL, sink, progress=seen.append)

    lines = run(SMALL).lines
    assert sink.getvalue() == b"".join(lines)
    assert count == len(lines)
    assert seen[-1] == count
    assert seen == sorted(seen)


@pytest.mark.parametrize(
    "bad",
    [
        {"symbols": 0},
        {"accounts": -1},
        {"days": 0},
        {"fill_delay_bars": 0},
        {"equity_every": 0},
        {"bar_seconds": 24_000},
        {"initial_equity": 0.0},
        {"start": "02/01/2024"},
    ],
)
def test_genparams_when_invalid_then_value_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GenParams(**bad)
