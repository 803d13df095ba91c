"""Level 3 stops: SL/TP/trailing, same-bar and gap rules, re-entry veto, exits always allowed."""

from __future__ import annotations

from typing import Any

from streams.core.ids import decision_id
from streams.testing import TapeBuilder

T0 = "2024-01-15T14:00:00Z"
STOP_ID = decision_id("a", "stop_loss", "X@2024-01-15T14:01:00.000Z", "X")


def _config(**stops: Any) -> dict[str, Any]:
    reentry = stops.pop("reentry", "until_rebalance")
    cooldown = stops.pop("cooldown_bars", 0)
    return {
        "risk": {
            "stops": {"default": stops, "reentry": reentry, "cooldown_bars": cooldown},
            "clusters": {"cap_pct": None},
            "per_trade": {"min_order_notional": 5_000},
        }
    }


def _long_100_at_100() -> TapeBuilder:
    tape = TapeBuilder().equity("a", T0, 100_000)
    tape.flat_bar("X", T0, 100.0)
    return tape.fill("a", "X", "BUY", 100, 100.0, "2024-01-15T14:00:30Z")


def _exits(result: Any) -> list[tuple[str, str, float, float]]:
    return [
        (d.origin.value, d.action.value, d.qty, d.price)
        for d in result.decisions
        if d.origin.value in ("stop_loss", "take_profit", "trailing_stop")
    ]


def test_bar_when_low_touches_stop_loss_then_full_exit_at_the_level() -> None:
    tape = _long_100_at_100().bar("X", "2024-01-15T14:01:00Z", 99.0, 99.5, 97.9, 98.5)

    result = tape.run(_config(stop_loss_pct=0.02))

    assert _exits(result) == [("stop_loss", "ALLOW", 100, 98.0)]


def test_bar_when_opening_below_stop_then_exit_at_the_open_gap_rule() -> None:
    tape = _long_100_at_100().bar("X", "2024-01-15T14:01:00Z", 95.0, 96.0, 94.0, 95.5)

    result = tape.run(_config(stop_loss_pct=0.02))

    assert _exits(result) == [("stop_loss", "ALLOW", 100, 95.0)]


def test_bar_when_stop_and_take_profit_both_touched_then_stop_loss_wins() -> None:
    tape = _long_100_at_100().bar("X", "2024-01-15T14:01:00Z", 100.0, 106.0, 97.0, 101.0)

    result = tape.run(_config(stop_loss_pct=0.02, take_profit_pct=0.05))

    assert _exits(result) == [("stop_loss", "ALLOW", 100, 98.0)]


def test_bar_when_high_reaches_take_profit_then_exit_at_level_or_gap_open() -> None:
    level = _long_100_at_100().bar("X", "2024-01-15T14:01:00Z", 101.0, 105.5, 100.5, 105.0)
    gap = _long_100_at_100().bar("X", "2024-01-15T14:01:00Z", 107.0, 108.0, 106.0, 107.5)

    assert _exits(level.run(_config(take_profit_pct=0.05))) == [("take_profit", "ALLOW", 100, 105.0)]
    assert _exits(gap.run(_config(take_profit_pct=0.05))) == [("take_profit", "ALLOW", 100, 107.0)]


def test_trailing_when_peak_set_by_earlier_bars_then_stop_follows_peak_not_current_high() -> None:
    tape = _long_100_at_100()
    tape.bar("X", "2024-01-15T14:01:00Z", 100.0, 110.0, 100.0, 109.0)  # peak -> 110 after the check
    # Same bar makes a new high of 111 and falls to 104.4: the level is 110 * 0.95 = 104.5 (old peak).
    tape.bar("X", "2024-01-15T14:02:00Z", 109.0, 111.0, 104.4, 105.0)

    result = tape.run(_config(trailing_pct=0.05))

    assert _exits(result) == [("trailing_stop", "ALLOW", 100, 104.5)]


def test_short_when_high_reaches_stop_then_buy_to_close() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000).flat_bar("X", T0, 100.0)
    tape.fill("a", "X", "SELL", 50, 100.0, "2024-01-15T14:00:30Z")
    tape.bar("X", "2024-01-15T14:01:00Z", 101.0, 103.0, 100.5, 102.5)

    result = tape.run(_config(stop_loss_pct=0.02))

    (exit_,) = [d for d in result.decisions if d.origin.value == "stop_loss"]
    assert (exit_.side and exit_.side.value, exit_.qty, exit_.price) == ("BUY", 50, 102.0)


def test_exit_when_below_dust_minimum_then_still_allowed() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000).flat_bar("X", T0, 10.0)
    tape.fill("a", "X", "BUY", 3, 10.0, "2024-01-15T14:00:30Z")  # $30 < $5,000 dust minimum
    tape.bar("X", "2024-01-15T14:01:00Z", 10.0, 10.0, 9.0, 9.5)

    result = tape.run(_config(stop_loss_pct=0.05))

    assert _exits(result) == [("stop_loss", "ALLOW", 3, 9.5)]


def test_signal_after_stop_out_when_reentry_until_rebalance_then_denied_reentry_veto() -> None:
    tape = _long_100_at_100().bar("X", "2024-01-15T14:01:00Z", 99.0, 99.5, 97.0, 98.5)
    tape.fill("a", "X", "SELL", 100, 98.0, "2024-01-15T14:01:30Z", decision_id=STOP_ID)
    tape.signal("a", "X", "2024-01-15T14:02:00Z", price=98.0, target_notional=10_000)

    result = tape.run(_config(stop_loss_pct=0.02))

    signal = next(d for d in result.decisions if d.origin.value == "signal")
    assert (signal.action.value, signal.layer.value, signal.reason) == ("DENY", "per_symbol", "reentry_veto")


def test_bars_after_stop_when_target_still_committed_then_cadence_does_not_rebuy() -> None:
    tape = _long_100_at_100()
    tape.signal("a", "X", "2024-01-15T14:00:40Z", price=100.0, target_notional=10_000)
    tape.bar("X", "2024-01-15T14:01:00Z", 99.0, 99.5, 97.0, 98.5)
    tape.fill("a", "X", "SELL", 100, 98.0, "2024-01-15T14:01:30Z", decision_id=STOP_ID)
    for minute in range(2, 120, 10):
        tape.flat_bar("X", f"2024-01-15T{14 + minute // 60:02d}:{minute % 60:02d}:00Z", 98.0)

    result = tape.run(_config(stop_loss_pct=0.02))

    assert [d.origin.value for d in result.decisions if d.action.value in ("ALLOW", "CLIP")] == ["stop_loss"]


def test_cooldown_when_bars_elapsed_then_reentry_allowed() -> None:
    tape = _long_100_at_100().bar("X", "2024-01-15T14:01:00Z", 99.0, 99.5, 97.0, 98.5)
    tape.fill("a", "X", "SELL", 100, 98.0, "2024-01-15T14:01:30Z", decision_id=STOP_ID)
    tape.signal("a", "X", "2024-01-15T14:01:40Z", price=98.0, target_notional=10_000)
    tape.flat_bar("X", "2024-01-15T14:02:00Z", 98.0)
    tape.flat_bar("X", "2024-01-15T14:03:00Z", 98.0)
    tape.signal("a", "X", "2024-01-15T14:03:30Z", price=98.0, target_notional=12_000)

    result = tape.run(_config(stop_loss_pct=0.02, reentry="cooldown", cooldown_bars=2))

    signals = [(d.action.value, d.reason) for d in result.decisions if d.origin.value == "signal"]
    assert signals == [("DENY", "reentry_veto"), ("ALLOW", "buy_to_lower_bound")]


def test_stop_when_account_halted_then_exit_still_allowed() -> None:
    config = _config(stop_loss_pct=0.02)
    config["risk"]["account"] = {"intraday_drawdown": {"warn_pct": 0.01, "halt_pct": 0.02}}
    tape = _long_100_at_100()
    tape.fill("a", "X", "SELL", 0.5, 100.0, "2024-01-15T14:00:40Z", fill_id="partial")
    tape.equity("a", "2024-01-15T14:00:50Z", 97_000)  # halted: flatten of 99.5 shares
    tape.fill("a", "Y", "BUY", 10, 50.0, "2024-01-15T14:00:55Z", fill_id="later")
    tape.flat_bar("Y", "2024-01-15T14:00:56Z", 50.0)
    tape.bar("Y", "2024-01-15T14:01:00Z", 50.0, 50.0, 48.0, 48.5)

    result = tape.run(config)

    assert result.halts[0].state.value == "HALTED"
    stop = [d for d in result.decisions if d.origin.value == "stop_loss"]
    assert [(d.symbol, d.action.value, d.qty) for d in stop] == [("Y", "ALLOW", 10)]
