"""NautilusTrader with the guard in the loop (streams/nautilus.py): a Nautilus backtest on the real NVDA/ORCL/YHOO
daily bars of 2000-2002 (../shared/data) whose every order is asked of riskguard first.

A 5 % daily-loss rule halts the account on the same days in the Nautilus backtest, in `riskguard replay` of the tape
the strategy fed the guard, and in `run_frame` of the same bars and targets; CLIP'd quantities, stops and flattens
are what Nautilus fills; entries stop while halted. `LiveGuard` speaks to the client of SPEC §11.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from nautilus_trader.model.identifiers import ClientOrderId

from schemas.config import config_from_dict
from schemas.inputs import Equity, Fill, Signal
from schemas.outputs import Decision, Halt
from streams.backtest import read_yahoo_csv, run_frame
from streams.core.engine import Engine
from streams.nautilus import LiveGuard, run_backtest
from streams.tape import replay

FILES = (("NVDA", "nvda-1999-2014.txt"), ("ORCL", "orcl-1995-2014.txt"), ("YHOO", "yhoo-1996-2014.txt"))
DAILY_LOSS: dict[str, Any] = {
    "risk": {
        "account": {"daily_loss": {"limit_pct": 0.05}, "max_total_loss_pct": None, "intraday_drawdown": None},
        "clusters": {"cap_pct": None},
    }
}
FIRST_HALTS = ["2000-01-04", "2000-01-06", "2000-01-12", "2000-01-24", "2000-01-28", "2000-03-14"]


@pytest.fixture(scope="module")
def crash_bars() -> pd.DataFrame:
    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    frames = [read_yahoo_csv(data / name, symbol, "2000-01-01", "2002-12-31") for symbol, name in FILES]
    return pd.concat(frames, ignore_index=True)


def equal_weight(bars: pd.DataFrame) -> pd.DataFrame:
    dates = pd.DatetimeIndex(sorted(bars["ts"].unique()))
    return pd.DataFrame(0.33, index=dates, columns=[symbol for symbol, _ in FILES])


def halted_days(frame: pd.DataFrame) -> list[str]:
    return list(frame.loc[frame["state"] == "HALTED", "ts"].dt.strftime("%Y-%m-%d"))


def replayed_halts(tape: bytes, config: dict[str, Any]) -> list[Halt]:
    outputs: list[Any] = []
    replay(Engine(config_from_dict(config)), tape.splitlines(), io.BytesIO(), on_output=outputs.append)
    return [o.value for o in outputs if isinstance(o.value, Halt)]


def test_nautilus_backtest_when_5pct_daily_loss_then_halts_on_the_same_days_as_replay_and_run_frame(
    crash_bars: pd.DataFrame,
) -> None:
    targets = equal_weight(crash_bars)
    run = run_backtest(crash_bars, targets, DAILY_LOSS)
    days = halted_days(run.halts)
    assert len(days) == 63 and days[:6] == FIRST_HALTS
    assert "2001-09-17" in days and days[-3:] == ["2002-11-11", "2002-12-04", "2002-12-09"]
    assert set(run.halts["reason"]) == {"daily_loss", "day_reset"}

    # `riskguard replay` of the tape the strategy fed the guard: the same halts, the same decisions.
    tape = run.guard.to_tape()
    assert replayed_halts(tape, DAILY_LOSS) == run.strategy.halts
    # The DataFrame API on the same bars and targets: the same halting days and the same ledger.
    frame = run_frame(crash_bars, targets, DAILY_LOSS)
    assert halted_days(frame.halts) == days
    keys = ["ts", "symbol", "action", "side", "qty", "reason", "origin"]
    assert run.ledger[keys].reset_index(drop=True).equals(frame.ledger[keys].reset_index(drop=True))


def test_nautilus_strategy_when_guard_clips_denies_and_flattens_then_orders_follow_the_guard(
    crash_bars: pd.DataFrame,
) -> None:
    config = orjson.loads(orjson.dumps(DAILY_LOSS))
    config["risk"]["stops"] = {"default": {"stop_loss_pct": 0.15}, "reentry": "cooldown", "cooldown_bars": 10}
    run = run_backtest(crash_bars, equal_weight(crash_bars), config)
    strategy = run.strategy
    traded = [d for d in strategy.decided if d.action in ("ALLOW", "CLIP")]
    assert len(strategy.submitted) == len(traded) > 0
    fills = run.fills()
    assert len(fills) == len(strategy.submitted)  # every order the guard allowed was filled, nothing else
    # Each Nautilus fill is the quantity of the decision its order carried: CLIP'd quantities included.
    by_id = {d.decision_id: d for d in traded}
    decided = [by_id[strategy.orders[ClientOrderId(str(c))]] for c in fills.index]
    assert [float(q) for q in fills["last_qty"]] == [d.qty for d in decided]
    assert sum(d.action == "CLIP" for d in decided) > 100
    origins = {origin for *_, origin in strategy.submitted}
    assert {"stop_loss", "flatten", "signal", "cadence"} <= origins
    # Halted: the entries of that day are denied and none is submitted; only exits go out.
    ledger = run.ledger
    for day in halted_days(run.halts):
        entries = ledger[(ledger["ts"] == pd.Timestamp(day, tz="UTC")) & (ledger["origin"] == "signal")]
        assert set(entries["action"]) <= {"DENY", "NOOP"}, day
    assert (ledger["reason"] == "account_halted").sum() > 0
    # And the stop exits replay too: the tape with Nautilus's own fill prices decides the same.
    assert replayed_halts(run.guard.to_tape(), config) == strategy.halts
    assert (ledger["origin"] == "stop_loss").sum() == 45


class FakeClient:
    """What `LiveGuard` calls on `SyncGuardClient`; answers every check with an ALLOW."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def check(self, signal: Any, timeout: float | None = None) -> Decision:
        self.calls.append(("check", signal))
        return Decision(
            decision_id="dec-1",
            account=signal.account,
            symbol=signal.symbol,
            ts=signal.ts,
            origin="signal",
            source_id=signal.signal_id,
            action="ALLOW",
            side="BUY",
            qty=10,
            requested_qty=10,
            price=100.0,
            notional=1000.0,
            layer="per_symbol",
            reason="buy_to_lower_bound",
            config_version="v",
        )

    def send_fill(self, fill: Fill) -> None:
        self.calls.append(("fill", fill))

    def send_equity(self, equity: Equity) -> None:
        self.calls.append(("equity", equity))


def test_live_guard_when_used_then_checks_signals_publishes_fills_and_equity_and_passes_guard_exits() -> None:
    client = FakeClient()
    guard = LiveGuard(client, "acct", timeout=2.0)
    ts = "2024-01-02T00:00:00Z"
    assert guard.send("bars", "AAA", {"symbol": "AAA", "ts": ts, "open": 1, "high": 1, "low": 1, "close": 1}) == []
    guard.send("equity", "acct", {"account": "acct", "ts": ts, "equity": 1000.0})
    exit_decision = client.check(Signal(signal_id="x", account="acct", symbol="BBB", ts=ts, target_weight=0.0))
    guard.arrived.put(exit_decision.model_copy(update={"decision_id": "dec-stop", "origin": "stop_loss"}))
    answers = guard.send("signals", "acct", {"signal_id": "s1", "account": "acct", "symbol": "AAA", "ts": ts,
                                             "target_weight": 0.1})  # fmt: skip
    assert [a.decision_id for a in answers if isinstance(a, Decision)] == ["dec-stop", "dec-1"]
    guard.arrived.put(answers[-1])  # the stream also carries the answer to the check: not executed twice
    fill = {"fill_id": "f1", "account": "acct", "symbol": "AAA", "side": "BUY", "qty": 10, "price": 100.0, "ts": ts}
    assert guard.send("fills", "acct", {**fill, "decision_id": "dec-1"}) == []
    kinds = [kind for kind, _ in client.calls]
    assert kinds == ["equity", "check", "check", "fill"]
    assert isinstance(client.calls[-1][1], Fill) and client.calls[-1][1].decision_id == "dec-1"
    with pytest.raises(TypeError, match="SyncGuardClient"):
        guard.follow()
