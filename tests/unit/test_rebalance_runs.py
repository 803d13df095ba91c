"""Rebalance runs from a signed REBALANCE control: a RebalanceRun record, orders through the guards."""

from __future__ import annotations

from typing import Any

from schemas.outputs import RebalanceRun
from streams.testing import TapeBuilder, TapeResult

KEY = b"k"
T0 = "2024-01-15T14:00:00Z"
CONFIG: dict[str, Any] = {
    "risk": {"clusters": {"cap_pct": None}, "per_symbol": {"band_pct": 0.0}},
    "rebalance": {
        "targets": {"X": 0.5, "Y": 0.5},
        "budget_pct": 1.0,
        "min_trade_value": 100,
        "max_position_weight": 0.6,
    },
}


def _book() -> TapeBuilder:
    tape = TapeBuilder().equity("a", T0, 100_000)
    tape.flat_bar("X", T0, 100.0).flat_bar("Y", T0, 50.0)
    tape.fill("a", "X", "BUY", 700, 100.0, "2024-01-15T14:00:10Z")  # X 70 %, Y 0 %, cash 30 %
    return tape


def _runs(result: TapeResult) -> list[RebalanceRun]:
    return [o.value for o in result.outputs if isinstance(o.value, RebalanceRun)]


def test_rebalance_control_when_drifted_then_run_record_and_orders_pass_the_guards() -> None:
    tape = _book().control("REBALANCE", "a", "2024-01-15T14:01:00Z", "r1", "2024-01-15T15:00:00Z", KEY)

    result = tape.run(CONFIG, control_key=KEY)

    (run,) = _runs(result)
    assert (run.status, run.trigger) == ("executed", "control")
    orders = {o["symbol"]: (o["side"], o["qty"]) for o in run.orders}
    assert orders == {"X": ("SELL", 200), "Y": ("BUY", 1000)}
    decisions = [d for d in result.decisions if d.origin.value == "rebalance"]
    # The buy passes Level 4 like any trade: the 30 % critical position weight clips it to 30,000.
    assert sorted((d.symbol, d.action.value, d.qty, d.reason) for d in decisions) == [
        ("X", "ALLOW", 200, "sell_to_target"),
        ("Y", "CLIP", 600, "concentration_position"),
    ]
    assert {d.source_id for d in decisions} == {run.run_id}
    assert {v["decision_id"] for v in run.summary["decisions"]} == {d.decision_id for d in decisions}


def test_rebalance_preview_when_requested_then_record_without_decisions() -> None:
    tape = _book().control("REBALANCE", "a", "2024-01-15T14:01:00Z", "r1", "2024-01-15T15:00:00Z", KEY, preview=True)

    result = tape.run(CONFIG, control_key=KEY)

    (run,) = _runs(result)
    assert run.status == "preview" and len(run.orders) == 2
    assert [d for d in result.decisions if d.origin.value == "rebalance"] == []


def test_rebalance_orders_when_account_halted_then_increases_denied_by_account() -> None:
    tape = _book().control("HALT", "a", "2024-01-15T14:00:30Z", "h1", "2024-01-15T15:00:00Z", KEY)
    tape.control("REBALANCE", "a", "2024-01-15T14:01:00Z", "r1", "2024-01-15T15:00:00Z", KEY)

    result = tape.run(CONFIG, control_key=KEY)

    decisions = {d.symbol: d for d in result.decisions if d.origin.value == "rebalance"}
    assert (decisions["Y"].action.value, decisions["Y"].layer.value) == ("DENY", "account")


def test_rebalance_when_symbol_was_stopped_out_then_veto_cleared() -> None:
    config = {**CONFIG, "risk": {**CONFIG["risk"], "stops": {"default": {"stop_loss_pct": 0.02}}}}
    tape = _book().bar("X", "2024-01-15T14:00:20Z", 99.0, 99.0, 97.0, 97.5)  # stop-loss on X
    tape.control("REBALANCE", "a", "2024-01-15T14:01:00Z", "r1", "2024-01-15T15:00:00Z", KEY)
    tape.signal("a", "X", "2024-01-15T14:02:00Z", price=98.0, target_notional=60_000)

    result = tape.run(config, control_key=KEY)

    signal = next(d for d in result.decisions if d.origin.value == "signal")
    assert signal.reason != "reentry_veto"
