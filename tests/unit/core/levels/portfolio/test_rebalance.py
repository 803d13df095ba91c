"""Seed 004 §4.1–4.4, §7 and §9 on worked numbers: bands, budget scale, max trades, min trade value,
floors, sells capped at holdings, max position weight, reconciliation, equal weights and the summary.

Every `_pct` is a fraction. Unless a test says otherwise prices are 100, so qty = value / 100.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.config import RebalancePolicy, TodayBias
from schemas.outputs import RebalanceRun
from streams.core.levels.portfolio.rebalance import (
    Holding,
    Order,
    RebalancePlan,
    plan_rebalance,
    reconcile_to_budget,
    trade_quantity,
)

# Constraints off unless a test turns one on: no budget limit, no cap, no dust floor, 100 trades.
LOOSE: dict[str, Any] = {"budget_pct": 1.0, "max_position_weight": 1.0, "min_trade_value": 0, "max_trades": 100}


def _policy(**overrides: Any) -> RebalancePolicy:
    return RebalancePolicy(**{**LOOSE, **overrides})


def _at_100(**values: float) -> dict[str, Holding]:
    """Holdings priced at 100 from their values."""
    return {symbol: Holding(qty=value / 100, price=100.0) for symbol, value in values.items()}


def _orders(plan: RebalancePlan) -> list[tuple[str, str, int]]:
    return [(o.symbol, o.side, o.qty) for o in plan.orders]


def _status(plan: RebalancePlan) -> dict[str, str]:
    return {line.symbol: line.status for line in plan.lines}


# ----------------------------------------------------------------- §4.1 weights and targets


def test_plan_when_no_targets_then_equal_weight_over_holdings_and_trades_to_it() -> None:
    # pv = 1000 + 3000 = 4000; equal weight 0.5 each -> desired 2000 each.
    # A: live 0.25, delta +1000 -> BUY 10; B: live 0.75, delta -1000 -> SELL 10.
    plan = plan_rebalance(_at_100(A=1000, B=3000), 0.0, None, _policy())

    assert plan.target_source == "equal_weight"
    assert [line.target_weight for line in plan.lines] == [0.5, 0.5]
    assert [line.live_weight for line in plan.lines] == [0.25, 0.75]
    assert _orders(plan) == [("A", "BUY", 10), ("B", "SELL", 10)]
    assert plan.orders[0].reasons == ("drift",)


def test_plan_when_targets_none_then_config_targets_and_unlisted_holdings_left_out_of_value() -> None:
    # Members are the config targets A and B; X is held but not a member, so pv = 6000 + 2000 + cash 2000 = 10000.
    # A: target 0.4 -> desired 4000, delta -2000 -> SELL 20; B: target 0.4 -> delta +2000 -> BUY 20.
    holdings = {**_at_100(A=6000, B=2000), "X": Holding(qty=50, price=1000.0)}
    policy = _policy(targets={"A": 0.4, "B": 0.4})

    plan = plan_rebalance(holdings, 2000.0, None, policy)

    assert plan.target_source == "config"
    assert plan.portfolio_value == 10_000
    assert plan.excluded == ("X",)
    assert _orders(plan) == [("A", "SELL", 20), ("B", "BUY", 20)]


def test_plan_when_target_symbol_has_no_price_then_no_order_and_status_no_price() -> None:
    # C is a target but neither held nor priced: its drift counts (0 - 0.3), but nothing can be bought.
    plan = plan_rebalance(_at_100(A=5000), 5000.0, {"A": 0.5, "C": 0.3}, _policy())

    assert _status(plan) == {"A": "within_band", "C": "no_price"}
    assert plan.orders == ()
    assert math.isclose(plan.summary.max_drift_before, 0.3)


# ----------------------------------------------------------------- §4.2 drift bands


def test_abs_band_when_drift_just_above_and_just_below_then_only_the_one_above_trades() -> None:
    # pv = 32100 + 28100 + 30000 + cash 9800 = 100000, targets 0.30 each, rel band off (10 x 0.30 = 3).
    # A: live 0.321, drift +0.021 >= 0.02 -> SELL (32100 - 30000) / 100 = 21.
    # B: live 0.281, drift -0.019, |drift| < 0.02 -> no trade.
    policy = _policy(drift_band_abs_pct=0.02, drift_band_rel_pct=10)

    plan = plan_rebalance(_at_100(A=32100, B=28100, C=30000), 9800.0, {"A": 0.3, "B": 0.3, "C": 0.3}, policy)

    assert _status(plan) == {"A": "ordered", "B": "within_band", "C": "within_band"}
    assert _orders(plan) == [("A", "SELL", 21)]


def test_abs_band_when_drift_exactly_at_threshold_then_trades() -> None:
    # Dyadic numbers so the equality is exact: pv = 102400, A = 28800 -> live 9/32 = 0.28125, target 0.25,
    # drift 0.03125 == band 0.03125 -> trades (>=). Desired 25600 -> SELL 32.
    policy = _policy(drift_band_abs_pct=0.03125, drift_band_rel_pct=10)

    plan = plan_rebalance(_at_100(A=28800, B=25600), 48000.0, {"A": 0.25, "B": 0.25}, policy)

    assert plan.lines[0].drift == 0.03125
    assert _orders(plan) == [("A", "SELL", 32)]


def test_rel_band_when_drift_either_side_of_15pct_of_target_then_only_the_one_above_trades() -> None:
    # Abs band off (1.0). Targets 0.20 -> rel threshold 0.15 x 0.20 = 0.03. pv = 23100 + 17100 + 59800 = 100000.
    # A: live 0.231, drift +0.031 >= 0.03 -> SELL 31.  B: live 0.171, |drift| 0.029 < 0.03 -> no trade.
    policy = _policy(drift_band_abs_pct=1.0, drift_band_rel_pct=0.15)

    plan = plan_rebalance(_at_100(A=23100, B=17100), 59800.0, {"A": 0.2, "B": 0.2}, policy)

    assert _status(plan) == {"A": "ordered", "B": "within_band"}
    assert _orders(plan) == [("A", "SELL", 31)]


def test_bands_when_either_abs_or_rel_is_met_then_trades_and_when_neither_then_not() -> None:
    # Default bands: abs 0.02 OR rel 0.15 x target. pv = 100000.
    # S (target 0.05): live 0.06, drift 0.010 < abs 0.02 but >= rel 0.0075 -> trades, SELL 10.
    # L (target 0.30): live 0.325, drift 0.025 < rel 0.045 but >= abs 0.02 -> trades, SELL 25.
    # M (target 0.20): live 0.215, drift 0.015 < abs 0.02 and < rel 0.03 -> no trade.
    policy = _policy(drift_band_abs_pct=0.02, drift_band_rel_pct=0.15)
    targets = {"S": 0.05, "L": 0.30, "M": 0.20}

    plan = plan_rebalance(_at_100(S=6000, L=32500, M=21500), 40000.0, targets, policy)

    assert _status(plan) == {"L": "ordered", "M": "within_band", "S": "ordered"}
    assert _orders(plan) == [("L", "SELL", 25), ("S", "SELL", 10)]


# ----------------------------------------------------------------- §4.3 budget scale


def test_budget_when_buys_dominate_then_scale_is_budget_over_total_buy() -> None:
    # pv = 30000 + 45000 + 25000 = 100000, budget 5 % = 5000. Targets 0.40.
    # A: delta +10000 (buy), B: delta -5000 (sell). scale = min(1, 5000 / max(10000, 5000)) = 0.5.
    # A: BUY 5000 -> 50; B: SELL 2500 -> 25.
    plan = plan_rebalance(_at_100(A=30000, B=45000), 25000.0, {"A": 0.4, "B": 0.4}, _policy(budget_pct=0.05))

    assert plan.summary.scale == 0.5
    assert (plan.summary.total_buy, plan.summary.total_sell) == (10_000, 5_000)
    assert _orders(plan) == [("A", "BUY", 50), ("B", "SELL", 25)]
    assert all("budget_scaled" in o.reasons for o in plan.orders)


def test_budget_when_sells_dominate_then_scale_is_budget_over_total_sell() -> None:
    # pv = 50000 + 30000 + 20000 = 100000, budget 4 % = 4000.
    # A: target 0.30 -> delta -20000 (sell); B: target 0.35 -> delta +5000 (buy).
    # scale = min(1, 4000 / max(5000, 20000)) = 0.2 -> A SELL 4000 -> 40; B BUY 1000 -> 10.
    plan = plan_rebalance(_at_100(A=50000, B=30000), 20000.0, {"A": 0.30, "B": 0.35}, _policy(budget_pct=0.04))

    assert math.isclose(plan.summary.scale, 0.2)
    assert _orders(plan) == [("A", "SELL", 40), ("B", "BUY", 10)]
    assert plan.summary.budget_used_pct == 1.0


def test_budget_when_larger_than_both_sides_then_scale_one_and_no_budget_tag() -> None:
    # pv 100000, budget 10 % = 10000 >= max(5000, 5000) -> scale 1, trades go all the way to target.
    plan = plan_rebalance(_at_100(A=45000, B=35000), 20000.0, {"A": 0.4, "B": 0.4}, _policy(budget_pct=0.10))

    assert plan.summary.scale == 1.0
    assert _orders(plan) == [("A", "SELL", 50), ("B", "BUY", 50)]
    assert all("budget_scaled" not in o.reasons for o in plan.orders)


# ----------------------------------------------------------------- §7 constraints


def test_max_trades_when_more_candidates_than_slots_then_the_largest_deltas_are_kept() -> None:
    # pv = 30000 + 14000 + 23000 + 16000 + 17000 = 100000, targets 0.20 -> desired 20000 each.
    # Deltas: A -10000, B +6000, C -3000, D +4000. max_trades 2 keeps |A| = 10000 and |B| = 6000.
    targets = {"A": 0.2, "B": 0.2, "C": 0.2, "D": 0.2}

    plan = plan_rebalance(_at_100(A=30000, B=14000, C=23000, D=16000), 17000.0, targets, _policy(max_trades=2))

    assert _orders(plan) == [("A", "SELL", 100), ("B", "BUY", 60)]
    assert _status(plan) == {"A": "ordered", "B": "ordered", "C": "max_trades", "D": "max_trades"}


def test_min_trade_value_when_delta_or_final_notional_below_it_then_no_order() -> None:
    # min 2000, abs band 0.01. pv = 21500 + 17000 + 18000 + cash 43500 = 100000, targets 0.20.
    # A: delta -1500 < 2000 -> dropped before sizing.  B: delta +3000 -> BUY 30 (3000 >= 2000).
    # C (price 1500, 12 held = 18000): delta +2000 passes, but floor(2000 / 1500) = 1 -> 1500 < 2000 -> dropped.
    holdings = {**_at_100(A=21500, B=17000), "C": Holding(qty=12, price=1500.0)}
    policy = _policy(min_trade_value=2000, drift_band_abs_pct=0.01)

    plan = plan_rebalance(holdings, 43500.0, {"A": 0.2, "B": 0.2, "C": 0.2}, policy)

    assert _orders(plan) == [("B", "BUY", 30)]
    assert _status(plan) == {"A": "below_min_trade_value", "B": "ordered", "C": "below_min_trade_value"}


def test_min_trade_value_when_small_deltas_would_crowd_max_trades_then_they_do_not_take_a_slot() -> None:
    # max_trades 1, min 2000. A delta -1500 is dust; B delta +3000 gets the only slot.
    plan = plan_rebalance(
        _at_100(A=21500, B=17000), 61500.0, {"A": 0.2, "B": 0.2}, _policy(max_trades=1, min_trade_value=2000)
    )

    assert _orders(plan) == [("B", "BUY", 30)]


def test_max_position_weight_when_target_above_it_then_target_capped_and_order_tagged() -> None:
    # Target 0.25 capped at 0.15. pv = 10000 + 90000 cash. A: live 0.10, drift -0.05, desired 15000 (not 25000)
    # -> BUY 50.
    plan = plan_rebalance(_at_100(A=10000), 90000.0, {"A": 0.25}, _policy(max_position_weight=0.15))

    line = plan.lines[0]
    assert (line.requested_weight, line.target_weight, line.desired_value) == (0.25, 0.15, 15000.0)
    assert _orders(plan) == [("A", "BUY", 50)]
    assert plan.orders[0].reasons == ("drift", "capped_max_weight")


def test_max_position_weight_when_equal_weight_of_four_then_each_capped_at_default_15pct() -> None:
    # Equal weight 0.25 > default cap 0.15. pv = 4 x 20000 = 80000 -> desired 12000 each, SELL 80 of each.
    policy = _policy(max_position_weight=0.15)

    plan = plan_rebalance(_at_100(A=20000, B=20000, C=20000, D=20000), 0.0, None, policy)

    assert {line.target_weight for line in plan.lines} == {0.15}
    assert _orders(plan) == [(s, "SELL", 80) for s in "ABCD"]


# ----------------------------------------------------------------- §4.4 quantities and reconciliation


def test_quantities_when_values_not_multiples_of_price_then_floored_both_sides() -> None:
    # pv = 18900 + 21700 + 59400 = 100000, targets 0.20, abs band 0.01.
    # A (price 300, 63 held): delta +1100 -> floor(1100 / 300) = 3 -> 900.
    # B (price 70, 310 held): delta -1700 -> floor(1700 / 70) = 24 -> 1680.
    holdings = {"A": Holding(qty=63, price=300.0), "B": Holding(qty=310, price=70.0)}

    plan = plan_rebalance(holdings, 59400.0, {"A": 0.2, "B": 0.2}, _policy(drift_band_abs_pct=0.01))

    assert [(o.symbol, o.side, o.qty, o.notional) for o in plan.orders] == [
        ("A", "BUY", 3, 900.0),
        ("B", "SELL", 24, 1680.0),
    ]


def test_quantities_when_fractional_holding_sold_out_then_whole_units_only() -> None:
    # 10.5 held at 100, target 0: delta -1050 -> floor(10.5) = 10 sold, 0.5 left.
    plan = plan_rebalance({"A": Holding(qty=10.5, price=100.0)}, 1000.0, {"A": 0.0}, _policy())

    assert _orders(plan) == [("A", "SELL", 10)]


def test_trade_quantity_when_sell_exceeds_holding_then_capped_at_holding() -> None:
    # Sell 1000 at 100 wants 10; only 7 held -> 7 (capped). 12.6 held -> 10, not capped. A short holds nothing to sell.
    assert trade_quantity(-1000.0, 100.0, 7.0) == (7, True)
    assert trade_quantity(-1000.0, 100.0, 12.6) == (10, False)
    assert trade_quantity(-1000.0, 100.0, -5.0) == (0, True)
    assert trade_quantity(999.0, 100.0, 0.0) == (9, False)


def _order(symbol: str, side: str, qty: int, price: float) -> Order:
    return Order(symbol, "BUY" if side == "BUY" else "SELL", qty, price, qty * price, ("drift",))


def test_reconcile_when_buys_exceed_budget_then_the_smallest_buy_is_trimmed_first() -> None:
    # Buys A 1000 + B 450 + C 3000 = 4450 against a budget of 4200: excess 250.
    # Smallest buy B (price 150) loses ceil(250 / 150) = 2 -> 1 left (150). Buys 4150 <= 4200. The sell is untouched.
    orders = [_order("A", "BUY", 10, 100.0), _order("B", "BUY", 3, 150.0), _order("C", "BUY", 30, 100.0)]
    orders.append(_order("D", "SELL", 5, 100.0))

    result = reconcile_to_budget(orders, 4200.0)

    assert [(o.symbol, o.qty) for o in result] == [("A", 10), ("B", 1), ("C", 30), ("D", 5)]
    assert result[1].reasons == ("drift", "trimmed")


def test_reconcile_when_excess_larger_than_smallest_then_it_is_dropped_and_the_next_smallest_trimmed() -> None:
    # Budget 3500: excess 950. B (450) dropped -> excess 500; next smallest A loses ceil(500 / 100) = 5 -> 5 (500).
    orders = [_order("A", "BUY", 10, 100.0), _order("B", "BUY", 3, 150.0), _order("C", "BUY", 30, 100.0)]

    result = reconcile_to_budget(orders, 3500.0)

    assert [(o.symbol, o.qty, o.notional) for o in result] == [("A", 5, 500.0), ("C", 30, 3000.0)]


def test_reconcile_when_trimmed_below_min_trade_value_then_dropped() -> None:
    # Budget 4200 trims B to 1 x 150 = 150, under a min trade value of 200 -> B dropped; buys 4000.
    orders = [_order("A", "BUY", 10, 100.0), _order("B", "BUY", 3, 150.0), _order("C", "BUY", 30, 100.0)]

    result = reconcile_to_budget(orders, 4200.0, min_trade_value=200.0)

    assert [o.symbol for o in result] == ["A", "C"]


def test_reconcile_when_within_budget_then_unchanged() -> None:
    orders = (_order("A", "BUY", 10, 100.0), _order("B", "SELL", 10, 100.0))

    assert reconcile_to_budget(orders, 1000.0) == orders


# ----------------------------------------------------------------- §9 summary and record


def test_summary_when_budget_scaled_then_turnover_drifts_trades_and_budget_use() -> None:
    # The buys-dominated case: A BUY 50 (5000), B SELL 25 (2500), pv 100000, budget 5000.
    # turnover = 7500 / 100000 = 0.075; drift before max(|0.30 - 0.40|, |0.45 - 0.40|) = 0.10;
    # after: A 35000 -> 0.35 (0.05), B 42500 -> 0.425 (0.025) -> 0.05; budget used max(5000, 2500) / 5000 = 1.
    plan = plan_rebalance(_at_100(A=30000, B=45000), 25000.0, {"A": 0.4, "B": 0.4}, _policy(budget_pct=0.05))
    s = plan.summary

    assert math.isclose(s.turnover_pct, 0.075)
    assert math.isclose(s.max_drift_before, 0.10)
    assert math.isclose(s.max_drift_after, 0.05)
    assert (s.trades, s.buys, s.sells) == (2, 1, 1)
    assert (s.buy_notional, s.sell_notional, s.budget) == (5000.0, 2500.0, 5000.0)
    assert s.budget_used_pct == 1.0


def test_record_when_built_then_json_ready_and_accepted_by_rebalance_run() -> None:
    plan = plan_rebalance(_at_100(A=30000, B=45000), 25000.0, {"A": 0.4, "B": 0.4}, _policy(budget_pct=0.05))

    record = plan.record()
    run = RebalanceRun(run_id="r1", account="acct", ts=0, status="preview", trigger="control", **record)

    assert json.loads(json.dumps(record)) == record
    assert record["inputs"]["holdings"] == [
        {"symbol": "A", "qty": 300.0, "price": 100.0, "value": 30000.0, "weight": 0.3},
        {"symbol": "B", "qty": 450.0, "price": 100.0, "value": 45000.0, "weight": 0.45},
    ]
    assert record["inputs"]["target_weights"] == {"A": 0.4, "B": 0.4}
    assert record["orders"][0] == {
        "symbol": "A",
        "side": "BUY",
        "qty": 50,
        "price": 100.0,
        "notional": 5000.0,
        "reasons": ["drift", "budget_scaled"],
    }
    assert run.policy["budget_pct"] == 0.05
    assert run.summary["trades"] == 2


def test_plan_when_portfolio_value_not_positive_then_no_orders() -> None:
    plan = plan_rebalance(_at_100(A=1000), -1000.0, None, _policy())

    assert plan.orders == ()
    assert plan.summary.budget == 0.0


def test_plan_when_price_not_positive_then_value_error() -> None:
    with pytest.raises(ValueError, match="price must be finite and > 0"):
        plan_rebalance({"A": Holding(qty=1, price=0.0)}, 0.0, None, _policy())


def test_plan_when_target_negative_then_value_error() -> None:
    with pytest.raises(ValueError, match="target weight"):
        plan_rebalance(_at_100(A=1000), 0.0, {"A": -0.1}, _policy())


# ----------------------------------------------------------------- properties

SYMBOLS = ("AAA", "BBB", "CCC", "DDD", "EEE", "FFF")
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def _scenarios(
    draw: st.DrawFn, overlays: bool = False
) -> tuple[dict[str, Holding], float, dict[str, float] | None, RebalancePolicy]:
    """A portfolio, cash, targets and a policy; with `overlays`, entries, yesterday's closes and §5/§7 overlays."""
    symbols = draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=6, unique=True))
    quantities = {s: draw(st.integers(0, 2000)) + draw(st.sampled_from((0.0, 0.5))) for s in symbols}
    holdings = {}
    for s, qty in quantities.items():
        price = draw(st.integers(1, 50_000)) / 100
        if overlays:
            entry = price * draw(st.sampled_from((0.0, 0.5, 0.8, 1.0, 1.25, 2.0)))
            previous = draw(st.none() | st.sampled_from((price * 0.9, price, price * 1.1)))
            holdings[s] = Holding(qty=qty, price=price, avg_entry=entry, prev_close=previous)
        else:
            holdings[s] = Holding(qty=qty, price=price)
    cash = float(draw(st.integers(0, 500_000)))
    targets: dict[str, float] | None = None
    if draw(st.booleans()):
        raw = {s: draw(st.integers(0, 100)) for s in symbols}
        total = sum(raw.values()) or 1
        invested = draw(st.sampled_from((1.0, 0.9, 0.5)))
        targets = {s: invested * v / total for s, v in raw.items()}
    policy = RebalancePolicy(
        budget_pct=draw(st.sampled_from((0.0, 0.01, 0.05, 0.10, 0.5, 1.0))),
        drift_band_abs_pct=draw(st.sampled_from((0.0, 0.01, 0.02, 0.05))),
        drift_band_rel_pct=draw(st.sampled_from((0.0, 0.15, 0.5))),
        max_trades=draw(st.integers(1, 6)),
        min_trade_value=draw(st.sampled_from((0, 100, 2000))),
        max_position_weight=draw(st.sampled_from((0.1, 0.15, 0.3, 1.0))),
    )
    if overlays:
        policy = policy.model_copy(
            update={
                "tilt_mode": draw(st.sampled_from(("neutral", "momentum", "mean_reversion"))),
                "tilt_strength": draw(st.sampled_from((0.0, 0.5, 1.0))),
                "profit_take_threshold_pct": draw(st.sampled_from((None, 0.0, 0.2))),
                "profit_take_boost_pct": draw(st.sampled_from((0.2, 1.0, 5.0))),
                "today_bias": draw(st.sampled_from((None, TodayBias(), TodayBias(high_pct=0.1, low_pct=0.0)))),
                "no_buy": draw(st.lists(st.sampled_from(symbols), max_size=2, unique=True)),
                "no_sell": draw(st.lists(st.sampled_from(symbols), max_size=2, unique=True)),
            }
        )
    return holdings, cash, targets, policy


@PROPS
@given(_scenarios() | _scenarios(overlays=True))
def test_property_when_any_portfolio_or_overlay_then_each_side_within_budget_and_sells_within_holdings(
    scenario: tuple[dict[str, Holding], float, dict[str, float] | None, RebalancePolicy],
) -> None:
    holdings, cash, targets, policy = scenario

    plan = plan_rebalance(holdings, cash, targets, policy)

    assert math.fsum(o.notional for o in plan.orders if o.side == "BUY") <= plan.summary.budget
    assert math.fsum(o.notional for o in plan.orders if o.side == "SELL") <= plan.summary.budget
    assert len(plan.orders) <= policy.max_trades
    for order in plan.orders:
        assert order.qty >= 1
        assert order.notional >= policy.min_trade_value
        if order.side == "SELL":
            assert order.qty <= holdings[order.symbol].qty


@PROPS
@given(_scenarios())
def test_property_when_any_portfolio_then_orders_move_toward_target_without_overshoot(
    scenario: tuple[dict[str, Holding], float, dict[str, float] | None, RebalancePolicy],
) -> None:
    holdings, cash, targets, policy = scenario

    plan = plan_rebalance(holdings, cash, targets, policy)

    lines = {line.symbol: line for line in plan.lines}
    for order in plan.orders:
        line = lines[order.symbol]
        tolerance = 1e-9 * max(1.0, plan.portfolio_value)
        if order.side == "BUY":
            assert line.delta_value > 0
            assert line.value + order.notional <= line.desired_value + tolerance
            assert line.target_weight <= policy.max_position_weight
        else:
            assert line.delta_value < 0
            assert line.value - order.notional >= line.desired_value - tolerance


@PROPS
@given(_scenarios(), st.randoms(use_true_random=False))
def test_property_when_input_order_shuffled_then_identical_plan(
    scenario: tuple[dict[str, Holding], float, dict[str, float] | None, RebalancePolicy], rnd: random.Random
) -> None:
    holdings, cash, targets, policy = scenario
    items = list(holdings.items())
    rnd.shuffle(items)
    shuffled_targets = None
    if targets is not None:
        target_items = list(targets.items())
        rnd.shuffle(target_items)
        shuffled_targets = dict(target_items)

    assert plan_rebalance(dict(items), cash, shuffled_targets, policy) == plan_rebalance(
        holdings, cash, targets, policy
    )


@st.composite
def _order_books(draw: st.DrawFn) -> tuple[list[Order], float]:
    symbols = draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=6, unique=True))
    orders = [
        _order(s, draw(st.sampled_from(("BUY", "SELL"))), draw(st.integers(1, 50)), draw(st.integers(1, 500)) * 1.0)
        for s in symbols
    ]
    return orders, float(draw(st.integers(0, 30_000)))


@PROPS
@given(_order_books())
def test_property_when_reconciled_then_each_side_within_budget_and_only_the_smallest_are_cut(
    book: tuple[list[Order], float],
) -> None:
    orders, budget = book

    result = {o.symbol: o for o in reconcile_to_budget(orders, budget)}

    for side in ("BUY", "SELL"):
        assert math.fsum(o.notional for o in result.values() if o.side == side) <= budget
        ranked = sorted((o for o in orders if o.side == side), key=lambda o: (o.notional, o.symbol))
        cut = [i for i, o in enumerate(ranked) if result.get(o.symbol) != o]
        # Smallest first: the cut orders are a prefix of the ranking, and only the last of them survives (trimmed).
        assert cut == list(range(len(cut)))
        assert all(o.symbol not in result for o in ranked[: max(len(cut) - 1, 0)])
        for o in ranked:
            kept = result.get(o.symbol)
            assert kept is None or (kept.qty <= o.qty and kept.side == o.side)
