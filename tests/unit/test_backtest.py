"""The DataFrame API of SPEC §12 (streams/backtest.py): the replay engine with a simulated execution.

Its decisions equal `riskguard replay` of the tape it fed the engine, on generated and real data; NaN targets keep
the state (a stopped-out symbol stays out while its target is non-zero); fills at the decision's price or the next
open, with commission and slippage; stops and flattens as explicit exit rows of the ledger.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from schemas.config import config_from_dict
from streams.backtest import LEDGER_COLUMNS, BacktestResult, read_bars_csv, run_frame
from streams.cli import app
from streams.core.engine import Engine
from streams.tape import encode, replay

STOPS = {"stops": {"default": {"stop_loss_pct": 0.05}}, "clusters": {"cap_pct": None}}


def generated_bars(symbols: int = 6, days: int = 80, seed: int = 3, crash_day: int | None = 40) -> pd.DataFrame:
    """Daily bars of a one-factor market; on `crash_day` every symbol gaps down about 8 %."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2021-01-04", periods=days, freq="B", tz="UTC")
    rows = []
    for n in range(symbols):
        price = 50.0 + 10 * n
        for day, date in enumerate(dates):
            shock = -0.08 if day == crash_day else 0.0
            open_ = price * math.exp(shock + rng.normal(0, 0.004))
            close = open_ * math.exp(rng.normal(0.0005, 0.018))
            high = max(open_, close) * (1 + abs(rng.normal(0, 0.006)))
            low = min(open_, close) * (1 - abs(rng.normal(0, 0.006)))
            rows.append((date, f"S{n:02d}", open_, high, low, close, 1000.0 + day))
            price = close
    return pd.DataFrame(rows, columns=["ts", "symbol", "open", "high", "low", "close", "volume"])


def dense_targets(bars: pd.DataFrame, weight: float) -> pd.DataFrame:
    dates = sorted(bars["ts"].unique())
    symbols = sorted(bars["symbol"].unique())
    return pd.DataFrame(weight, index=pd.DatetimeIndex(dates), columns=symbols)


def replayed(result: BacktestResult, config: dict[str, object]) -> list[bytes]:
    """The decisions and halts of a fresh engine's replay of the result's tape, encoded."""
    engine = Engine(config_from_dict(config))
    sink = io.BytesIO()
    replay(engine, result.to_tape().splitlines(), sink)
    return [line for line in sink.getvalue().splitlines() if orjson.loads(line)["topic"] in ("decisions", "halts")]


def own(result: BacktestResult) -> list[bytes]:
    return [encode(o).rstrip(b"\n") for o in result.outputs if o.topic in ("decisions", "halts")]


def test_run_frame_when_its_tape_is_replayed_then_the_same_decisions_and_halts_generated_data() -> None:
    bars = generated_bars()
    targets = dense_targets(bars, 0.3)  # 6 x 30 % = 1.8x gross: the crash day breaches the 5 % daily loss
    for fill in ("decision", "next_open"):
        result = run_frame(bars, targets, {"risk": STOPS}, fill=fill, commission_bps=2.0, slippage_bps=3.0)
        assert own(result) == replayed(result, {"risk": STOPS}), fill
        assert len(result.ledger) == len(result.decisions) > 0
        assert list(result.halts["state"]) == ["HALTED", "ACTIVE"], fill
        assert result.halts["ts"].iloc[0] == pd.Timestamp("2021-03-01", tz="UTC")  # business day 40


def test_run_frame_when_a_halt_then_flatten_exit_rows_and_no_entries_that_day() -> None:
    bars = generated_bars()
    result = run_frame(bars, dense_targets(bars, 0.3), {"risk": STOPS})
    halt_day = result.halts["ts"].iloc[0]
    day = result.ledger[result.ledger["ts"] == halt_day]
    flattens = day[day["origin"] == "flatten"]
    assert len(flattens) > 0 and set(flattens["action"]) == {"ALLOW"} and set(flattens["side"]) == {"SELL"}
    assert (result.positions.loc[halt_day] == 0).all()
    assert result.state.loc[halt_day] == "HALTED"
    entries = day[(day["origin"] == "signal") & day["action"].isin(["ALLOW", "CLIP"])]
    assert entries.empty
    assert set(day[day["origin"] == "signal"]["action"]) <= {"DENY", "NOOP"}
    next_day = result.ledger[result.ledger["ts"] > halt_day]
    assert (next_day["origin"] == "signal").any() and (next_day["action"] == "ALLOW").any()  # trading resumes


def test_run_frame_when_stopped_out_and_target_stays_then_not_rebought_until_nan_or_change() -> None:
    bars = generated_bars(crash_day=None, seed=11)
    targets = dense_targets(bars, 0.15)
    result = run_frame(bars, targets, {"risk": STOPS})
    ledger = result.ledger
    stops = ledger[ledger["origin"] == "stop_loss"]
    assert len(stops) >= 1 and set(stops["action"]) == {"ALLOW"} and set(stops["side"]) == {"SELL"}
    for _, stop in stops.iterrows():
        later = ledger[(ledger["symbol"] == stop["symbol"]) & (ledger["ts"] > stop["ts"])]
        assert not ((later["side"] == "BUY") & later["action"].isin(["ALLOW", "CLIP"])).any(), stop["symbol"]
        assert (result.positions.loc[result.positions.index > stop["ts"], stop["symbol"]] == 0).all()
    # A changed target of a stopped symbol is refused by the re-entry veto, not re-bought.
    symbol, when = stops.iloc[0]["symbol"], stops.iloc[0]["ts"]
    raised = targets.copy()
    raised.loc[raised.index > when, symbol] = 0.25
    again = run_frame(bars, raised, {"risk": STOPS})
    refused = again.ledger[(again.ledger["symbol"] == symbol) & (again.ledger["ts"] > when)]
    assert "reentry_veto" in set(refused["reason"])
    assert not refused["action"].isin(["ALLOW", "CLIP"]).any()


def test_run_frame_when_targets_are_nan_then_no_signal_is_sent() -> None:
    bars = generated_bars(symbols=3, days=20, crash_day=None)
    targets = dense_targets(bars, np.nan)
    targets.iloc[0] = 0.3  # one rebalance row, then NaN: keep the current state
    targets.iloc[10, 1] = 0.0  # sell S01 on day 10
    result = run_frame(bars, targets, {"risk": STOPS})
    topics = [orjson.loads(line)["topic"] for line in result.to_tape().splitlines()]
    assert topics.count("signals") == 4
    assert topics.count("bars") == 60 and topics.count("equity") == 20
    assert result.positions["S01"].iloc[-1] == 0 and result.positions["S00"].iloc[-1] > 0
    assert set(result.ledger["origin"]) <= {"signal", "cadence", "stop_loss"}


def test_run_frame_when_fills_then_priced_with_slippage_commission_and_carry_the_decision_id() -> None:
    bars = generated_bars(symbols=2, days=10, crash_day=None)
    targets = dense_targets(bars, np.nan)
    targets.iloc[0] = 0.4
    decision = run_frame(bars, targets, {"risk": STOPS}, commission_bps=10.0, slippage_bps=20.0)
    ledger = decision.ledger.set_index("decision_id")
    for _, fill in decision.fills.iterrows():
        row = ledger.loc[fill["decision_id"]]
        assert fill["ts"] == row["ts"] and fill["qty"] == row["qty"]
        assert fill["price"] == pytest.approx(row["price"] * (1.002 if fill["side"] == "BUY" else 0.998))
        assert fill["fee"] == pytest.approx(fill["qty"] * fill["price"] * 0.001)
    first_day = decision.fills[decision.fills["ts"] == decision.close.index[0]]
    assert len(first_day) == 2 and set(first_day["side"]) == {"BUY"}
    spent = (first_day["qty"] * first_day["price"]).sum() + first_day["fee"].sum()
    assert decision.cash.iloc[0] == pytest.approx(100_000 - spent)
    marked = decision.cash + (decision.positions * decision.close).sum(axis=1)
    assert np.allclose(decision.equity, marked)

    nxt = run_frame(bars, targets, {"risk": STOPS}, fill="next_open")
    first, second = nxt.close.index[:2]
    assert (nxt.positions.loc[first] == 0).all() and (nxt.positions.loc[second] > 0).all()
    opens = nxt.open.loc[second]
    on_open = nxt.fills[nxt.fills["ts"] == second]
    assert len(on_open) == 2 and nxt.fills["ts"].min() == second
    for _, fill in on_open.iterrows():
        assert fill["price"] == opens[fill["symbol"]]
        assert nxt.ledger.set_index("decision_id").loc[fill["decision_id"], "ts"] == first


def test_run_frame_ledger_columns_and_config_as_yaml_text_or_path(tmp_path: Path) -> None:
    bars = generated_bars(symbols=2, days=5, crash_day=None)
    targets = dense_targets(bars, 0.2)
    text = "risk:\n  stops:\n    default: {stop_loss_pct: 0.05}\n  clusters: {cap_pct: null}\n"
    path = tmp_path / "bt.yaml"
    path.write_text(text, encoding="utf-8")
    by_text = run_frame(bars, targets, text)
    by_path = run_frame(bars, targets, str(path))
    assert tuple(by_text.ledger.columns) == LEDGER_COLUMNS
    assert by_text.to_tape() == by_path.to_tape()
    assert own(by_text) == own(by_path)
    assert list(by_text.halts.columns) == ["ts", "state", "previous_state", "reason"]
    with pytest.raises(ValueError, match="fill must be"):
        run_frame(bars, targets, text, fill="close")  # type: ignore[arg-type]


def test_run_frame_on_real_sp500_bars_when_replayed_by_the_cli_then_the_same_decisions(
    data_dir: Path, tmp_path: Path
) -> None:
    bars = read_bars_csv(data_dir / "sp500_daily_2018-01-02_2018-02-07.csv")
    symbols = sorted(bars["symbol"].unique())[:60]
    bars = bars[bars["symbol"].isin(symbols)]
    targets = dense_targets(bars, 2.0 / len(symbols))  # 2x gross: the 5 Feb sell-off breaches 5 % a day
    risk = {"stops": {"default": {"stop_loss_pct": 0.04}}, "clusters": {"cap_pct": None}}
    result = run_frame(bars, targets, {"risk": risk}, fill="next_open", commission_bps=1.0)
    tape, out, cfg = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "bt.yaml"
    result.to_tape(tape)
    cfg.write_text(orjson.dumps({"risk": risk}).decode(), encoding="utf-8")  # JSON is YAML
    invoked = CliRunner().invoke(app, ["replay", str(tape), "--config", str(cfg), "--out", str(out)])
    assert invoked.exit_code == 0, invoked.output
    cli = [line for line in out.read_bytes().splitlines() if orjson.loads(line)["topic"] in ("decisions", "halts")]
    assert cli == own(result)
    assert list(result.halts["ts"].dt.strftime("%Y-%m-%d")) == ["2018-02-05", "2018-02-06"]
    assert (result.ledger["origin"] == "stop_loss").sum() == 30
    flattens = result.ledger[result.ledger["origin"] == "flatten"]
    assert len(flattens) == 30 and set(flattens["ts"].dt.strftime("%Y-%m-%d")) == {"2018-02-05"}
