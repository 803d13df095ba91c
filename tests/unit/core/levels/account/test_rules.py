"""Level 1: trading states, daily loss (of/basis), total loss, drawdowns, quota, timezone resets."""

from __future__ import annotations

from typing import Any

from streams.testing import TapeBuilder

NO_CLUSTER_CAP: dict[str, Any] = {"clusters": {"cap_pct": None}}


def _states(result: Any) -> list[tuple[str, str]]:
    return [(h.state.value, h.reason) for h in result.halts]


def test_equity_when_ten_pct_below_intraday_peak_then_halted_seed003_example() -> None:
    tape = TapeBuilder()
    tape.equity("a", "2024-01-15T14:00:00Z", 10_000)
    tape.equity("a", "2024-01-15T14:10:00Z", 10_500)
    tape.equity("a", "2024-01-15T14:20:00Z", 9_975)  # 5 % from peak -> WARNING
    tape.equity("a", "2024-01-15T14:30:00Z", 9_450)  # 10 % from peak -> HALTED

    result = tape.run({"accounts": {"a": {"profile": "seed003"}}})

    assert _states(result) == [("WARNING", "intraday_drawdown_warning"), ("HALTED", "intraday_drawdown")]
    halt = result.halts[-1]
    assert halt.facts.peak_equity == 10_500
    assert abs(halt.facts.intraday_drawdown_pct - 0.10) < 1e-12
    assert halt.until is not None and halt.until == 1705363200000  # next UTC midnight


def test_warning_when_on_warning_reduce_then_reducing_denies_increases_but_allows_reductions() -> None:
    config = {
        "accounts": {"a": {"profile": "seed003", "risk": {"account": {"on_warning": "reduce"}, **NO_CLUSTER_CAP}}}
    }
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000)
    tape.flat_bar("X", "2024-01-15T14:00:00Z", 10.0).fill("a", "X", "BUY", 1000, 10.0, "2024-01-15T14:00:00Z")
    tape.equity("a", "2024-01-15T14:10:00Z", 94_000)
    tape.signal("a", "Y", "2024-01-15T14:20:00Z", price=10.0, target_notional=5_000)
    tape.signal("a", "X", "2024-01-15T14:21:00Z", price=10.0, target_notional=4_000)

    result = tape.run(config)

    assert _states(result) == [("REDUCING", "intraday_drawdown_warning")]
    deny, reduce = result.decisions
    assert (deny.action.value, deny.layer.value, deny.reason) == ("DENY", "account", "account_reducing")
    assert (reduce.action.value, reduce.side and reduce.side.value, reduce.qty) == (
        "ALLOW",
        "SELL",
        580,
    )  # to the upper edge 4,200


def test_day_roll_when_halted_then_active_again_and_peak_reset() -> None:
    tape = TapeBuilder()
    tape.equity("a", "2024-01-15T14:00:00Z", 10_000)
    tape.equity("a", "2024-01-15T15:00:00Z", 8_900)
    tape.equity("a", "2024-01-16T00:00:00Z", 8_900)  # the first event at the reset instant

    result = tape.run({"accounts": {"a": {"profile": "seed003"}}})

    assert _states(result) == [("HALTED", "intraday_drawdown"), ("ACTIVE", "day_reset")]
    assert result.halts[-1].facts.peak_equity == 8_900
    assert result.halts[-1].facts.day_start_equity == 8_900


def test_total_loss_when_equity_at_ninety_pct_of_initial_then_shutdown_survives_day_roll() -> None:
    tape = TapeBuilder()
    tape.equity("a", "2024-01-15T14:00:00Z", 100_000)
    tape.equity("a", "2024-01-16T14:00:00Z", 96_000)
    tape.equity("a", "2024-01-17T14:00:00Z", 92_000)
    tape.equity("a", "2024-01-18T14:00:00Z", 90_000)
    tape.equity("a", "2024-01-19T14:00:00Z", 95_000)

    result = tape.run({"accounts": {"a": {"profile": "standard"}}})

    assert _states(result) == [("SHUTDOWN", "max_total_loss")]
    assert result.engine.account_state("a").trading_state == "SHUTDOWN"


def test_daily_loss_standard_when_five_pct_below_day_start_equity_then_halted() -> None:
    tape = TapeBuilder()
    tape.equity("a", "2024-01-15T14:00:00Z", 100_000)
    tape.equity("a", "2024-01-15T23:00:00Z", 104_000)  # the last value before the roll is the day start
    tape.equity("a", "2024-01-16T10:00:00Z", 98_801)
    tape.equity("a", "2024-01-16T11:00:00Z", 98_800)  # 104,000 - 5 % of 104,000

    result = tape.run({"accounts": {"a": {"profile": "standard"}}})

    assert _states(result) == [("HALTED", "daily_loss")]
    assert result.halts[0].ts == 1705402800000


def test_ftmo_daily_loss_when_equity_reaches_yesterdays_balance_minus_five_pct_of_initial_then_halted() -> None:
    config = {"accounts": {"a": {"profile": "ftmo", "initial_balance": 100_000}}}
    tape = TapeBuilder()
    tape.equity("a", "2024-01-15T10:00:00Z", 100_000, balance=100_000)
    tape.equity("a", "2024-01-15T22:00:00Z", 103_000, balance=102_000)  # closed +2,000 today
    # 00:00 Europe/Prague is 23:00 UTC in winter: the FTMO day rolls there.
    tape.equity("a", "2024-01-15T23:00:00Z", 103_000, balance=102_000)
    tape.equity("a", "2024-01-16T09:00:00Z", 97_001, balance=102_000)
    tape.equity("a", "2024-01-16T10:00:00Z", 97_000, balance=102_000)  # 102,000 - 5,000

    result = tape.run(config)

    assert _states(result) == [("HALTED", "daily_loss")]
    halt = result.halts[0]
    assert (halt.facts.day_start_balance, halt.facts.equity) == (102_000, 97_000)
    assert halt.until == 1705446000000  # 2024-01-16T23:00:00Z, the next Prague midnight


def test_ftmo_day_when_before_prague_midnight_then_not_rolled() -> None:
    config = {"accounts": {"a": {"profile": "ftmo", "initial_balance": 100_000}}}
    tape = TapeBuilder()
    tape.equity("a", "2024-01-15T10:00:00Z", 100_000, balance=100_000)
    tape.equity("a", "2024-01-15T22:00:00Z", 103_000, balance=102_000)
    tape.equity("a", "2024-01-15T22:59:59Z", 95_100, balance=102_000)  # still the 15th in Prague

    result = tape.run(config)

    # Day start balance is still 100,000: limit 95,000 not reached.
    assert _states(result) == []
    assert result.engine.account_state("a").day_start_balance == 100_000


def test_the5ers_daily_loss_when_equity_below_max_of_balance_and_equity_at_5pm_new_york_then_halted() -> None:
    config = {"accounts": {"a": {"profile": "the5ers"}}}
    tape = TapeBuilder()
    tape.equity("a", "2024-01-15T15:00:00Z", 100_000, balance=100_000)
    tape.equity("a", "2024-01-15T21:59:00Z", 101_000, balance=100_000)  # open profit at the close
    tape.equity("a", "2024-01-15T22:00:00Z", 101_000, balance=100_000)  # 17:00 New York: the day rolls
    tape.equity("a", "2024-01-16T15:00:00Z", 95_951, balance=100_000)
    tape.equity("a", "2024-01-16T16:00:00Z", 95_950, balance=100_000)  # 101,000 * 0.95

    result = tape.run(config)

    assert _states(result) == [("HALTED", "daily_loss")]
    assert result.halts[0].facts.day_start_equity == 101_000


def test_trailing_drawdown_end_of_day_when_equity_at_floor_then_shutdown_and_floor_locks_at_initial() -> None:
    config = {
        "accounts": {
            "a": {"profile": "topstep_like", "initial_balance": 50_000, "risk": {"account": {"daily_loss": None}}}
        }
    }
    tape = TapeBuilder()
    tape.equity("a", "2024-01-15T15:00:00Z", 50_000, balance=50_000)
    tape.equity("a", "2024-01-15T22:00:00Z", 51_000, balance=51_000)
    tape.equity("a", "2024-01-16T15:00:00Z", 51_000, balance=51_000)  # after 17:00 Chicago: mark 51,000
    tape.equity("a", "2024-01-16T16:00:00Z", 49_100, balance=51_000)  # floor 51,000 - 2,000 = 49,000
    tape.equity("a", "2024-01-16T17:00:00Z", 49_000, balance=51_000)

    result = tape.run(config)

    assert _states(result) == [("SHUTDOWN", "trailing_drawdown")]


def test_halt_when_positions_open_then_one_flatten_allow_per_position() -> None:
    config = {"accounts": {"a": {"profile": "seed003", "risk": NO_CLUSTER_CAP}}}
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000)
    tape.flat_bar("X", "2024-01-15T14:00:00Z", 10.0).flat_bar("Y", "2024-01-15T14:00:00Z", 20.0)
    tape.fill("a", "X", "BUY", 100, 10.0, "2024-01-15T14:01:00Z")
    tape.fill("a", "Y", "SELL", 50, 20.0, "2024-01-15T14:01:00Z")
    tape.equity("a", "2024-01-15T15:00:00Z", 89_000)

    result = tape.run(config)

    flattens = [d for d in result.decisions if d.origin.value == "flatten"]
    assert [(d.symbol, d.action.value, d.side and d.side.value, d.qty) for d in flattens] == [
        ("X", "ALLOW", "SELL", 100),
        ("Y", "ALLOW", "BUY", 50),
    ]
    assert {d.source_id for d in flattens} == {result.halts[0].halt_id}


def test_signal_when_halted_then_increase_denied_and_reduction_allowed() -> None:
    config = {"accounts": {"a": {"profile": "seed003", "risk": NO_CLUSTER_CAP}}}
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000)
    tape.flat_bar("X", "2024-01-15T14:00:00Z", 10.0).fill("a", "X", "BUY", 100, 10.0, "2024-01-15T14:01:00Z")
    tape.equity("a", "2024-01-15T15:00:00Z", 89_000)
    tape.fill("a", "X", "SELL", 100, 10.0, "2024-01-15T15:01:00Z", fill_id="flat1")
    tape.signal("a", "X", "2024-01-15T15:05:00Z", price=10.0, target_notional=1_000)
    tape.fill("a", "Y", "BUY", 100, 10.0, "2024-01-15T15:06:00Z", fill_id="y1")
    tape.signal("a", "Y", "2024-01-15T15:07:00Z", price=10.0, target_notional=500)

    result = tape.run(config)

    signals = [d for d in result.decisions if d.origin.value == "signal"]
    assert [(d.symbol, d.action.value, d.layer.value, d.reason) for d in signals] == [
        ("X", "DENY", "account", "account_halted"),
        ("Y", "ALLOW", "per_symbol", "sell_to_upper_bound"),
    ]


def test_entry_quota_when_exhausted_then_clip_then_deny_and_reset_next_day() -> None:
    config = {"risk": {"account": {"daily_entry_quota_pct": 0.10}, **NO_CLUSTER_CAP, "per_symbol": {"band_pct": 0.0}}}
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=10.0, target_notional=6_000)
    tape.signal("a", "Y", "2024-01-15T14:02:00Z", price=10.0, target_notional=6_000)
    tape.signal("a", "Z", "2024-01-15T14:03:00Z", price=10.0, target_notional=6_000)
    tape.signal("a", "W", "2024-01-16T14:03:00Z", price=10.0, target_notional=6_000)

    result = tape.run(config)

    assert [(d.symbol, d.action.value, d.qty, d.layer.value) for d in result.decisions] == [
        ("X", "ALLOW", 600, "per_symbol"),
        ("Y", "CLIP", 400, "account"),
        ("Z", "DENY", 0, "account"),
        ("W", "ALLOW", 600, "per_symbol"),
    ]


def test_signal_when_no_equity_known_then_denied_fail_closed() -> None:
    tape = TapeBuilder().signal("a", "X", "2024-01-15T14:01:00Z", price=10.0, target_notional=1_000)

    (decision,) = tape.run({}).decisions

    assert (decision.action.value, decision.layer.value, decision.reason) == ("DENY", "account", "equity_unknown")
