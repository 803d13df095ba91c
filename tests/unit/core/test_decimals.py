"""Limits and trigger levels compare as the decimals they denote, the same way in every level (SPEC §6.3).

Each case puts a bar, a target or an equity report exactly on a level that decimal inputs define but
binary floating point misses by one unit in the last place (short entry 50 with a 10 % trailing stop:
50 × 1.1 = 55.000000000000007). Every one of them fails on the plain float comparison.
"""

from __future__ import annotations

from typing import Any

import pytest

from streams.core.decimals import at_least, at_most, level, over, same, under
from streams.testing import TapeBuilder

T0 = "2024-01-15T14:00:00Z"
T1 = "2024-01-15T14:01:00Z"


def test_comparisons_when_within_one_part_in_a_billion_then_equal_else_ordered() -> None:
    assert 50 * 1.1 > 55 and same(50 * 1.1, 55.0) and at_least(55.0, 50 * 1.1) and not under(55.0, 50 * 1.1)
    assert at_most(0.07 * 100_000, 7_000) and not over(0.07 * 100_000, 7_000)
    assert over(7_000.01, 7_000) and under(6_999.99, 7_000) and not same(1e-12, 0.0) and same(0.0, -0.0)
    assert level(50 * 1.1) == 55.0 and level(20 * (1 - 0.07)) == 18.6 and level(1 / 3) == 0.333333333333


def _stops(**stops: Any) -> dict[str, Any]:
    return {
        "risk": {
            "stops": {"default": stops, "reentry": "allow"},
            "clusters": {"cap_pct": None},
            "per_trade": {"min_order_notional": 0},
        }
    }


def _exit(entry: float, side: str, stops: dict[str, Any], bar: tuple[float, float, float, float]) -> Any:
    tape = TapeBuilder().equity("a", T0, 100_000).flat_bar("X", T0, entry)
    tape.fill("a", "X", side, 10, entry, "2024-01-15T14:00:30Z")
    tape.bar("X", T1, *bar)
    exits = [d for d in tape.run(_stops(**stops)).decisions if d.origin.value != "signal"]
    return [(d.origin.value, d.side and d.side.value, d.qty, d.price) for d in exits]


@pytest.mark.parametrize(
    ("case", "entry", "side", "stops", "bar", "expected"),
    [
        # SPEC §6.3's own example: short at 50, 10 % trailing stop at 55; 50 * 1.1 = 55.000000000000007
        ("short trailing", 50.0, "SELL", {"trailing_pct": 0.1}, (54.0, 55.0, 53.0, 54.5), ("trailing_stop", 55.0)),
        ("short stop-loss", 50.0, "SELL", {"stop_loss_pct": 0.1}, (54.0, 55.0, 53.0, 54.5), ("stop_loss", 55.0)),
        # long at 20: stop-loss 7 % at 18.6 (float: 18.599999999999998), take-profit 7 % at 21.4 (21.400000000000002)
        ("long stop-loss", 20.0, "BUY", {"stop_loss_pct": 0.07}, (19.0, 19.5, 18.6, 19.0), ("stop_loss", 18.6)),
        ("long take-profit", 20.0, "BUY", {"take_profit_pct": 0.07}, (21.0, 21.4, 20.5, 21.2), ("take_profit", 21.4)),
        # short at 120: take-profit 3 % at 116.4 (float: 116.39999999999999)
        ("short take-profit", 120.0, "SELL", {"take_profit_pct": 0.03}, (117, 118, 116.4, 117), ("take_profit", 116.4)),
    ],
)
def test_stop_when_bar_touches_its_decimal_level_exactly_then_it_triggers_at_that_level(
    case: str, entry: float, side: str, stops: dict[str, Any], bar: tuple[float, float, float, float], expected: Any
) -> None:
    exits = _exit(entry, side, stops, bar)

    origin, price = expected
    assert exits == [(origin, "BUY" if side == "SELL" else "SELL", 10, price)], case


def test_target_when_exactly_on_the_symbol_cap_then_not_clipped() -> None:
    # 7 % of 100,000 is 7,000.000000000001 in floating point; the cap is 7,000
    config = {"risk": {"per_symbol": {"default_cap": 7_000, "rebalance_to": "target"}, "clusters": {"cap_pct": None}}}
    tape = TapeBuilder().equity("a", T0, 100_000).flat_bar("X", T0, 100.0)
    tape.signal("a", "X", T1, price=100.0, target_weight=0.07)

    (decision,) = tape.run(config).decisions

    assert (decision.action.value, decision.qty, decision.clips) == ("ALLOW", 70, [])


def test_equity_when_exactly_at_the_intraday_drawdown_halt_then_halted() -> None:
    # peak 11,370, equity 10,574.1: a 7 % drawdown, (peak - equity) / peak = 0.06999999999999997
    drawdown = {"warn_pct": 0.05, "halt_pct": 0.07}
    config = {"accounts": {"a": {"risk": {"account": {"intraday_drawdown": drawdown, "daily_loss": None}}}}}
    tape = TapeBuilder().equity("a", T0, 11_370).equity("a", T1, 10_574.1)

    halts = tape.run(config).halts

    assert [(h.state.value, h.reason) for h in halts][-1] == ("HALTED", "intraday_drawdown")


def test_equity_when_exactly_at_the_total_loss_limit_then_shut_down() -> None:
    # initial 11,370, 7 % total loss at 10,574.1; 11,370 * (1 - 0.07) = 10,574.099999999999
    config = {"accounts": {"a": {"risk": {"account": {"max_total_loss_pct": 0.07, "intraday_drawdown": None}}}}}
    tape = TapeBuilder().equity("a", T0, 11_370, balance=11_370).equity("a", T1, 10_574.1)

    halts = tape.run(config).halts

    assert [(h.state.value, h.reason) for h in halts] == [("SHUTDOWN", "max_total_loss")]


def _crossing(**changes: Any) -> Any:
    from streams.core.kernel.decision import TradeContext, evaluate

    # long 100 at 10 (1,000), asked to go short 500: close 100, open 50 short
    base: dict[str, Any] = {"origin": "signal", "price": 10.0, "filled_qty": 100.0, "pending_qty": 0.0}
    base |= {"equity": 100_000.0, "trading_state": "ACTIVE", "requested_target": -500.0, "band_pct": 0.0}
    return evaluate(TradeContext(**{**base, **changes}))


@pytest.mark.parametrize(
    ("changes", "layer", "reason"),
    [
        ({"trading_state": "REDUCING"}, "account", "account_reducing"),
        ({"trading_state": "HALTED"}, "account", "account_halted"),
        ({"vetoed": True}, "per_symbol", "reentry_veto"),
    ],
)
def test_zero_crossing_trade_when_gate_or_veto_cuts_the_opening_part_then_clips_names_that_layer(
    changes: dict[str, Any], layer: str, reason: str
) -> None:
    outcome = _crossing(**changes)

    assert (outcome.action, outcome.side, outcome.qty, outcome.layer, outcome.reason) == (
        "CLIP",
        "SELL",
        100.0,
        layer,
        reason,
    )
    assert [(c.layer, c.reason, c.before, c.after) for c in outcome.clips] == [(layer, reason, 500.0, 0.0)]
    assert _crossing().action == "ALLOW" and _crossing().qty == 150.0 and _crossing().clips == ()
