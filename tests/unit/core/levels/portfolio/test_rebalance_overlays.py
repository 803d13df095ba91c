"""Seed 004 §5 and §7 overlays on the drift trades (SPEC §6.6), on worked numbers.

The book (prices 100, portfolio value 100,000 with 30,000 cash, targets 15 % each = 15,000) under
seed 004's §12 defaults (budget 10 % = 10,000, bands 2 % / 15 %, max trades 10, min trade 2,000):

| name | held | value | avg entry | total P&L | drift trade |
|---|---|---|---|---|---|
| A | 300 | 30,000 | 80 | +25 % winner | SELL 15,000 |
| B | 100 | 10,000 | 125 | −20 % loser | BUY 5,000 |
| C | 250 | 25,000 | 125 | −20 % loser | SELL 10,000 |
| D | 50 | 5,000 | 80 | +25 % winner | BUY 10,000 |

Neutral: buys 15,000, sells 25,000, scale 10,000 / 25,000 = 0.4 -> A SELL 60, B BUY 20, C SELL 40, D BUY 40.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.config import RebalancePolicy, TodayBias
from streams.core.levels.portfolio.rebalance import Holding, RebalancePlan, plan_rebalance, today_winners
from streams.testing import TapeBuilder

TARGETS = {"A": 0.15, "B": 0.15, "C": 0.15, "D": 0.15}
CASH = 30_000.0


def _book(**previous: float) -> dict[str, Holding]:
    entries = {"A": (300, 80.0), "B": (100, 125.0), "C": (250, 125.0), "D": (50, 80.0)}
    return {s: Holding(qty, 100.0, entry, previous.get(s)) for s, (qty, entry) in entries.items()}


def _plan(book: dict[str, Holding] | None = None, **policy: Any) -> RebalancePlan:
    return plan_rebalance(book or _book(), CASH, TARGETS, RebalancePolicy(**policy))  # §12 defaults otherwise


def _orders(plan: RebalancePlan) -> list[tuple[str, str, int, tuple[str, ...]]]:
    return [(o.symbol, o.side, o.qty, o.reasons) for o in plan.orders]


def _status(plan: RebalancePlan) -> dict[str, str]:
    return {line.symbol: line.status.value for line in plan.lines}


def test_neutral_when_seed004_defaults_then_drift_trades_scaled_to_the_budget_untagged() -> None:
    plan = _plan()

    assert plan.summary.scale == 0.4
    assert [(s, side, qty) for s, side, qty, _ in _orders(plan)] == [
        ("A", "SELL", 60),
        ("B", "BUY", 20),
        ("C", "SELL", 40),
        ("D", "BUY", 40),
    ]
    assert all(reasons == ("drift", "budget_scaled") for *_, reasons in _orders(plan))


def test_momentum_when_four_name_book_then_loser_buy_dropped_and_winner_sell_halved() -> None:
    # B's buy is dropped; A's sell 15,000 x (1 - 0.5) = 7,500. Buys 10,000, sells 17,500 -> scale 4/7:
    # A 4,285.71 -> 42, C 5,714.29 -> 57, D 5,714.29 -> 57.
    plan = _plan(tilt_mode="momentum")

    assert _orders(plan) == [
        ("A", "SELL", 42, ("drift", "tilt_momentum", "budget_scaled")),
        ("C", "SELL", 57, ("drift", "budget_scaled")),
        ("D", "BUY", 57, ("drift", "budget_scaled")),
    ]
    assert _status(plan)["B"] == "dropped_by_tilt"
    lines = {line.symbol: line for line in plan.lines}
    assert lines["A"].delta_value == -7_500 and lines["A"].overlays == ("tilt_momentum",)
    assert lines["B"].overlays == ("tilt_momentum",)


def test_mean_reversion_when_four_name_book_then_loser_buy_boosted_and_loser_sell_dropped() -> None:
    # C's sell is dropped; B's buy 5,000 x 1.5 = 7,500. Buys 17,500, sells 15,000 -> scale 4/7:
    # A 8,571.43 -> 85, B 4,285.71 -> 42, D 5,714.29 -> 57.
    plan = _plan(tilt_mode="mean_reversion")

    assert _orders(plan) == [
        ("A", "SELL", 85, ("drift", "budget_scaled")),
        ("B", "BUY", 42, ("drift", "tilt_mean_reversion", "budget_scaled")),
        ("D", "BUY", 57, ("drift", "budget_scaled")),
    ]
    assert _status(plan)["C"] == "dropped_by_tilt"


def test_tilt_strength_when_set_then_scales_the_tilt() -> None:
    # Momentum at 0.2: A's sell x 0.8 = 12,000; sells 22,000 -> scale 10/22 -> A 5,454.5 -> 54.
    plan = _plan(tilt_mode="momentum", tilt_strength=0.2)

    assert _orders(plan)[0][:3] == ("A", "SELL", 54)


def test_profit_take_when_winner_at_threshold_then_its_sell_boosted_and_tagged() -> None:
    # A is +25 % >= 20 %: its sell 15,000 x 1.2 = 18,000. Sells 28,000 -> scale 10/28: A 6,428.6 -> 64,
    # C 3,571.4 -> 35, D 3,571.4 -> 35; B 1,785.7 -> 17 shares = 1,700 < 2,000 min trade value.
    plan = _plan(profit_take_threshold_pct=0.20, profit_take_boost_pct=0.20)

    assert _orders(plan) == [
        ("A", "SELL", 64, ("drift", "profit_take", "budget_scaled")),
        ("C", "SELL", 35, ("drift", "budget_scaled")),
        ("D", "BUY", 35, ("drift", "budget_scaled")),
    ]
    assert _status(plan)["B"] == "below_min_trade_value"


def test_profit_take_when_pnl_exactly_at_threshold_then_boosted() -> None:
    # Entry 80, price 100: 100 / 80 - 1 = 0.25 exactly as decimals.
    plan = _plan(profit_take_threshold_pct=0.25, profit_take_boost_pct=0.20)

    assert "profit_take" in plan.orders[0].reasons


def test_profit_take_when_boost_would_sell_more_than_held_then_capped_at_the_holding() -> None:
    plan = plan_rebalance(
        {"A": Holding(300, 100.0, 50.0)},
        0.0,
        {"A": 0.5},
        RebalancePolicy(
            budget_pct=1.0, max_position_weight=1.0, profit_take_threshold_pct=0.2, profit_take_boost_pct=5
        ),
    )

    # Drift sell 15,000 x 6 = 90,000 > the 30,000 held: the whole holding, no more.
    assert _orders(plan) == [("A", "SELL", 300, ("drift", "profit_take"))]


def test_today_bias_when_three_of_four_up_then_sells_boosted() -> None:
    # Up today: A (prev 90), C (prev 95), D (prev 90); B down (prev 110): 3/4 = 0.75 >= 0.7.
    # Sells x 1.1: A 16,500, C 11,000 -> sells 27,500 -> scale 10/27.5: A 6,000 -> 60, C 4,000 -> 40,
    # D 3,636 -> 36; B 1,818 -> 18 shares = 1,800 < 2,000: the min trade value still binds.
    plan = _plan(_book(A=90, B=110, C=95, D=90), today_bias=TodayBias())

    assert today_winners(_book(A=90, B=110, C=95, D=90)) == 0.75
    assert [(s, side, qty) for s, side, qty, _ in _orders(plan)] == [
        ("A", "SELL", 60),
        ("C", "SELL", 40),
        ("D", "BUY", 36),
    ]
    assert [("today_bias" in o.reasons) for o in plan.orders] == [True, True, False]
    assert _status(plan)["B"] == "below_min_trade_value"


def test_today_bias_when_one_of_four_up_then_buys_boosted_and_when_half_then_nothing() -> None:
    low = _plan(_book(A=110, B=110, C=110, D=90), today_bias=TodayBias(low_pct=0.25))
    half = _plan(_book(A=90, B=110, C=110, D=90), today_bias=TodayBias())

    assert [("today_bias" in o.reasons) for o in low.orders] == [False, True, False, True]
    assert _orders(half) == _orders(_plan())


def test_no_buy_and_no_sell_when_listed_then_those_trades_dropped() -> None:
    plan = _plan(no_buy=["D"], no_sell=["A"])

    assert _status(plan) == {"A": "no_sell", "B": "ordered", "C": "ordered", "D": "no_buy"}
    # Left: B BUY 5,000, C SELL 10,000 -> within the 10,000 budget, unscaled.
    assert [(s, side, qty) for s, side, qty, _ in _orders(plan)] == [("B", "BUY", 50), ("C", "SELL", 100)]


def test_no_buy_when_symbol_must_sell_then_the_sell_still_goes() -> None:
    plan = _plan(no_buy=["A"])

    assert _orders(plan)[0][:2] == ("A", "SELL")


def test_overlays_when_neutral_then_the_plan_is_unchanged_and_the_record_names_every_key() -> None:
    record = _plan().record()

    assert record == _plan(tilt_mode="neutral", today_bias=None, no_buy=[], no_sell=[]).record()
    for key in ("tilt_mode", "tilt_strength", "profit_take_threshold_pct", "profit_take_boost_pct", "today_bias"):
        assert key in record["policy"]
    assert {"no_buy", "no_sell"} <= set(record["policy"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(("neutral", "momentum", "mean_reversion")),
    st.lists(st.sampled_from("ABCD"), max_size=4, unique=True),
    st.lists(st.sampled_from("ABCD"), max_size=4, unique=True),
)
def test_property_when_listed_no_buy_or_no_sell_then_no_such_order_in_any_tilt(
    tilt: str, no_buy: list[str], no_sell: list[str]
) -> None:
    plan = _plan(tilt_mode=tilt, no_buy=no_buy, no_sell=no_sell)

    assert not [o for o in plan.orders if (o.side == "BUY" and o.symbol in no_buy)]
    assert not [o for o in plan.orders if (o.side == "SELL" and o.symbol in no_sell)]


def test_rebalance_run_when_momentum_through_the_engine_then_avg_entry_from_fills_drops_the_loser() -> None:
    # Entries from fills: W bought at 50 (now 100: winner), L bought at 200 (now 100: loser).
    tape = TapeBuilder()
    tape.equity("a", "2024-01-15T14:00:00Z", 100_000)
    tape.flat_bar("W", "2024-01-15T14:00:00Z", 50.0).flat_bar("L", "2024-01-15T14:00:00Z", 200.0)
    tape.fill("a", "W", "BUY", 400, 50.0, "2024-01-15T14:00:00Z").fill(
        "a", "L", "BUY", 50, 200.0, "2024-01-15T14:00:00Z"
    )
    tape.flat_bar("W", "2024-01-15T15:00:00Z", 100.0).flat_bar("L", "2024-01-15T15:00:00Z", 100.0)
    tape.equity("a", "2024-01-15T15:00:00Z", 115_000)
    tape.control(
        "REBALANCE", "a", "2024-01-15T15:01:00Z", "n1", "2024-01-15T16:00:00Z", None, targets={"W": 0.2, "L": 0.2}
    )
    config = {
        "control": {"require_signature": False},
        "rebalance": {"tilt_mode": "momentum", "budget_pct": 1.0, "max_position_weight": 1.0, "min_trade_value": 0},
        "risk": {
            "clusters": {"cap_pct": None},
            "concentration": {"position": [1, 2], "group": [1, 2], "cluster": [1, 2]},
        },
    }

    result = tape.run(config)

    (run,) = [o.value for o in result.topic("rebalance_runs")]
    # W: 40,000 of 115,000 vs 23,000 -> SELL 17,000 x 0.5 = 8,500 -> 85; L: 5,000 vs 23,000 -> BUY, dropped.
    assert [(o["symbol"], o["side"], o["qty"], o["reasons"]) for o in run.orders] == [
        ("W", "SELL", 85, ["drift", "tilt_momentum"])
    ]
    assert {line["symbol"]: line["status"] for line in run.summary["lines"]} == {"L": "dropped_by_tilt", "W": "ordered"}
    assert run.policy["tilt_mode"] == "momentum"
