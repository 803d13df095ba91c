"""Scheduled rebalance runs in event time (SPEC §6.6, seed 004 §8): the first bar at or after each run
time starts one run per account, exactly like a REBALANCE control (trigger `schedule`), and clears
re-entry vetoes; `next_rebalance_at` advances and is in the account's state view.

Calendar facts: 2024-01-19 and 2024-03-08/15/22/29 are Fridays; 2024-03-10 is the US DST change
(New York EST = UTC-5 before, EDT = UTC-4 after); 2024-03-29 is Good Friday; 2024-06-15 a Saturday.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.outputs import RebalanceRun
from streams.core.ids import stable_id
from streams.testing import TapeBuilder, TapeResult
from streams.views import account_state

KEY = b"k"
WEEKLY: dict[str, Any] = {
    "enabled": True,
    "frequency": "weekly",
    "day_rule": "friday",
    "time_local": "15:10",
    "timezone": "America/New_York",
    "targets": {"X": 0.5, "Y": 0.5},
    "budget_pct": 1.0,
    "min_trade_value": 100,
    "max_position_weight": 0.6,
}
RISK: dict[str, Any] = {"clusters": {"cap_pct": None}, "per_symbol": {"band_pct": 0.0}}


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _config(**rebalance: Any) -> dict[str, Any]:
    return {"risk": RISK, "rebalance": {**WEEKLY, **rebalance}}


def _book(start: str = "2024-01-15T14:00:00Z") -> TapeBuilder:
    """Equity 100,000; X 700 at 100 (70 %), Y none at 50: 20 points of drift against 50/50 targets."""
    tape = TapeBuilder().equity("a", start, 100_000)
    tape.flat_bar("X", start, 100.0).flat_bar("Y", start, 50.0)
    return tape.fill("a", "X", "BUY", 700, 100.0, start, fill_id="f0")


def _bars(tape: TapeBuilder, *times: str) -> TapeBuilder:
    for ts in times:
        tape.flat_bar("X", ts, 100.0).flat_bar("Y", ts, 50.0)
    return tape


def _runs(result: TapeResult) -> list[RebalanceRun]:
    return [o.value for o in result.outputs if isinstance(o.value, RebalanceRun)]


def test_schedule_when_bars_pass_friday_1510_new_york_then_one_run_at_the_first_bar_after_it() -> None:
    # Friday 2024-01-19 15:10 EST = 20:10Z. Bars at 20:00Z (before), 21:00Z and 22:00Z (after): one run, at 21:00Z.
    tape = _bars(_book(), "2024-01-19T20:00:00Z", "2024-01-19T21:00:00Z", "2024-01-19T22:00:00Z")

    result = tape.run(_config())

    (run,) = _runs(result)
    assert (run.trigger, run.status, run.ts) == ("schedule", "executed", _ms("2024-01-19T21:00:00Z"))
    assert run.run_id == stable_id("run", "a", "schedule", _ms("2024-01-19T20:10:00Z"))
    assert run.inputs["scheduled_at"] == "2024-01-19T20:10:00.000Z"
    # Exactly the control run's plan and guards (tests/unit/test_rebalance_runs.py): sell 200 X, buy 1000 Y,
    # the buy clipped to 600 by the 30 % critical position weight.
    assert {o["symbol"]: (o["side"], o["qty"]) for o in run.orders} == {"X": ("SELL", 200), "Y": ("BUY", 1000)}
    decisions = sorted((d.symbol, d.action.value, d.qty, d.reason) for d in result.decisions)
    assert decisions == [("X", "ALLOW", 200, "sell_to_target"), ("Y", "CLIP", 600, "concentration_position")]
    assert {d.source_id for d in result.decisions} == {run.run_id}


def test_schedule_when_a_run_fired_then_next_rebalance_at_advances_a_week_in_the_state_view() -> None:
    tape = _book()

    before = tape.run(_config())
    after = _bars(_book(), "2024-01-19T21:00:00Z").run(_config())

    assert account_state(before.engine, "a")["next_rebalance_at"] == "2024-01-19T20:10:00.000Z"  # type: ignore[index]
    state = account_state(after.engine, "a")
    assert state is not None
    assert state["next_rebalance_at"] == "2024-01-26T20:10:00.000Z"
    assert state["rebalance"]["last_run"]["trigger"] == "schedule"
    assert after.engine.portfolio.books["a"].view.next_rebalance_at == _ms("2024-01-26T20:10:00Z")  # type: ignore[union-attr]


def test_schedule_when_two_accounts_then_each_gets_its_own_run_with_its_own_id() -> None:
    tape = _book().equity("b", "2024-01-15T14:00:00Z", 50_000)
    _bars(tape, "2024-01-19T21:00:00Z")

    result = tape.run(_config())

    runs = _runs(result)
    assert sorted(r.account for r in runs) == ["a", "b"]
    assert len({r.run_id for r in runs}) == 2 and {r.trigger for r in runs} == {"schedule"}


def test_schedule_when_no_bar_for_three_weeks_then_one_catch_up_run_not_three() -> None:
    tape = _bars(_book(), "2024-02-07T12:00:00Z", "2024-02-08T12:00:00Z")

    result = tape.run(_config())

    (run,) = _runs(result)
    assert run.ts == _ms("2024-02-07T12:00:00Z")
    assert run.inputs["scheduled_at"] == "2024-01-19T20:10:00.000Z"  # the first missed run; the rest collapse
    assert result.engine.account.rebalance_at["a"] == _ms("2024-02-09T20:10:00Z")  # strictly after the bar


def test_schedule_when_across_the_dst_change_then_1510_local_moves_from_2010z_to_1910z() -> None:
    times = [f"2024-03-{day}T{hm}:00Z" for day in ("08", "15") for hm in ("19:00", "19:10", "20:00", "20:10")]
    tape = _bars(_book("2024-03-04T14:00:00Z"), *times)

    result = tape.run(_config())

    assert [r.ts for r in _runs(result)] == [_ms("2024-03-08T20:10:00Z"), _ms("2024-03-15T19:10:00Z")]


def test_schedule_when_friday_is_a_holiday_then_rolls_to_thursday_with_roll_previous() -> None:
    times = ["2024-03-28T19:10:00Z", "2024-03-29T19:10:00Z", "2024-04-05T19:10:00Z"]
    tape = _bars(_book("2024-03-25T14:00:00Z"), *times)

    result = tape.run(_config(holidays=["2024-03-29"], roll="previous"))

    assert [r.inputs["scheduled_at"] for r in _runs(result)] == ["2024-03-28T19:10:00.000Z", "2024-04-05T19:10:00.000Z"]


def test_schedule_when_monthly_day_15_is_a_saturday_then_the_run_is_monday_17th() -> None:
    # 15:10 in Kolkata (UTC+5:30, no DST) is 09:40Z. Saturday 15th and Sunday 16th pass without a run.
    times = ["2024-06-14T10:00:00Z", "2024-06-15T10:00:00Z", "2024-06-16T10:00:00Z", "2024-06-17T10:00:00Z"]
    tape = _bars(_book("2024-06-03T04:00:00Z"), *times)

    result = tape.run(_config(frequency="monthly", day_rule="15", timezone="Asia/Kolkata"))

    (run,) = _runs(result)
    assert (run.inputs["scheduled_at"], run.ts) == ("2024-06-17T09:40:00.000Z", _ms("2024-06-17T10:00:00Z"))


def test_schedule_when_start_date_is_later_then_no_run_before_it() -> None:
    times = ["2024-01-19T21:00:00Z", "2024-01-26T21:00:00Z", "2024-02-02T21:00:00Z"]
    tape = _bars(_book(), *times)

    result = tape.run(_config(start_date="2024-01-22"))

    assert [r.inputs["scheduled_at"] for r in _runs(result)] == ["2024-01-26T20:10:00.000Z", "2024-02-02T20:10:00.000Z"]


def test_schedule_when_disabled_then_no_runs_and_no_next_rebalance_at() -> None:
    tape = _bars(_book(), "2024-01-19T21:00:00Z")

    result = tape.run(_config(enabled=False))

    assert _runs(result) == []
    assert account_state(result.engine, "a")["next_rebalance_at"] is None  # type: ignore[index]


def test_scheduled_run_when_symbol_was_stopped_out_then_veto_cleared_and_signal_may_add_again() -> None:
    config = _config()
    config["risk"] = {**RISK, "stops": {"default": {"stop_loss_pct": 0.02}}}
    tape = _book().bar("X", "2024-01-16T15:00:00Z", 99.0, 99.0, 97.0, 97.5)  # stop-loss: X vetoed
    tape.fill("a", "X", "SELL", 700, 98.0, "2024-01-16T15:00:05Z", fill_id="exit")
    tape.signal("a", "X", "2024-01-17T15:00:00Z", price=98.0, target_notional=60_000, signal_id="s1")
    _bars(tape, "2024-01-19T21:00:00Z")  # the scheduled run
    tape.signal("a", "X", "2024-01-19T21:05:00Z", price=98.0, target_notional=65_000, signal_id="s2")

    result = tape.run(config)

    signals = {d.source_id: d for d in result.decisions if d.origin.value == "signal"}
    assert signals["s1"].reason == "reentry_veto"
    assert signals["s2"].reason != "reentry_veto" and signals["s2"].action.value in ("ALLOW", "CLIP")
    assert [r.trigger for r in _runs(result)] == ["schedule"]
    assert not result.engine.symbol.books["a"].symbols["X"].vetoed


def test_control_run_when_schedule_is_on_then_both_kinds_of_run_with_their_own_trigger() -> None:
    tape = _book().control("REBALANCE", "a", "2024-01-17T15:00:00Z", "r1", "2024-01-17T16:00:00Z", KEY, preview=True)
    _bars(tape, "2024-01-19T21:00:00Z")

    result = tape.run(_config(), control_key=KEY)

    assert [(r.trigger, r.status) for r in _runs(result)] == [("control", "preview"), ("schedule", "executed")]
    assert _runs(result)[0].run_id == stable_id("run", "a", "r1")  # control run ids are unchanged


def test_rebalance_control_when_targets_are_not_weights_then_refused_as_bad_control() -> None:
    tape = _book().control(
        "REBALANCE", "a", "2024-01-17T15:00:00Z", "r1", "2024-01-17T16:00:00Z", KEY, targets={"X": "half"}
    )

    result = tape.run(_config(enabled=False), control_key=KEY)

    assert _runs(result) == []
    (letter,) = [o.value for o in result.topic("deadletter")]
    assert letter.error.startswith("bad control: REBALANCE params.targets['X']")  # type: ignore[attr-defined]
    assert [e.kind for e in result.events if e.kind.startswith("control")] == ["control_rejected"]
