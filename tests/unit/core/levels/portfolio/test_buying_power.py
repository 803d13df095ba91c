"""Buying power (seed 003 "verify buying power", SPEC §6.1): a buy's opening part fits in the latest cash
× multiplier less the pending buys, or it is clipped / denied (`layer: account`, reason `buying_power`)."""

from __future__ import annotations

from typing import Any

from streams.testing import TapeBuilder

CONFIG: dict[str, Any] = {
    "risk": {
        "account": {"buying_power": {"multiplier": 2.0}},
        "clusters": {"cap_pct": None},
        "concentration": {"position": [5, 5], "group": [5, 5], "cluster": [5, 5]},
        "per_symbol": {"band_pct": 0.0},
    }
}


def _rows(tape: TapeBuilder, config: dict[str, Any] = CONFIG) -> list[tuple[str, str, str | None, float, str, str]]:
    return [
        (d.symbol, d.action.value, d.side and d.side.value, d.qty, d.layer.value, d.reason)
        for d in tape.run(config).decisions
    ]


def test_buys_when_pending_use_the_cash_then_the_next_is_clipped_then_denied() -> None:
    # Cash 10,000 x 2 = 20,000. X 15,000 passes and is pending; Y 10,000 fits 5,000 -> 50 sh; Z: none left.
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000, cash=10_000)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=100.0, target_notional=15_000)
    tape.signal("a", "Y", "2024-01-15T14:02:00Z", price=100.0, target_notional=10_000)
    tape.signal("a", "Z", "2024-01-15T14:03:00Z", price=100.0, target_notional=1_000)

    result = tape.run(CONFIG)

    assert [(d.symbol, d.action.value, d.qty, d.layer.value, d.reason) for d in result.decisions] == [
        ("X", "ALLOW", 150, "per_symbol", "buy_to_lower_bound"),
        ("Y", "CLIP", 50, "account", "buying_power"),
        ("Z", "DENY", 0, "account", "buying_power"),
    ]
    assert [d.facts["buying_power"] for d in result.decisions] == [20_000, 5_000, 0]
    assert result.decisions[1].facts["cash"] == 10_000


def test_buy_when_its_pending_fill_arrives_and_cash_is_marked_then_the_cash_counts_not_the_pending() -> None:
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000, cash=10_000)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", signal_id="sx", price=100.0, target_notional=15_000)
    result = tape.run(CONFIG)
    decision_id = result.decisions[0].decision_id
    # Filled: cash 10,000 - 15,000 = -5,000 -> -10,000 of buying power, and nothing pending any more.
    tape.fill("a", "X", "BUY", 150, 100.0, "2024-01-15T14:02:00Z", decision_id=decision_id)
    tape.equity("a", "2024-01-15T14:03:00Z", 100_000, cash=-5_000)
    tape.equity("a", "2024-01-15T14:04:00Z", 100_000, cash=20_000)  # cash came in
    tape.signal("a", "Y", "2024-01-15T14:05:00Z", price=100.0, target_notional=50_000)

    y = tape.run(CONFIG).decisions[-1]

    assert (y.action.value, y.qty, y.facts["buying_power"]) == ("CLIP", 400, 40_000)


def test_sells_and_short_covers_when_no_buying_power_then_pass() -> None:
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000, cash=0)
    tape.fill("a", "L", "BUY", 100, 100.0, "2024-01-15T14:00:00Z")
    tape.fill("a", "S", "SELL", 100, 100.0, "2024-01-15T14:00:00Z")
    tape.signal("a", "L", "2024-01-15T14:01:00Z", price=100.0, target_notional=0)
    tape.signal("a", "S", "2024-01-15T14:02:00Z", price=100.0, target_notional=0)
    tape.signal("a", "N", "2024-01-15T14:03:00Z", price=100.0, target_notional=-5_000)  # a new short: a sell

    assert _rows(tape) == [
        ("L", "ALLOW", "SELL", 100, "per_symbol", "close_position"),
        ("S", "ALLOW", "BUY", 100, "per_symbol", "close_position"),
        ("N", "ALLOW", "SELL", 50, "per_symbol", "sell_to_upper_bound"),
    ]


def test_buy_when_it_crosses_a_short_then_the_cover_goes_and_the_opening_part_is_cut() -> None:
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000, cash=0)
    tape.fill("a", "S", "SELL", 100, 100.0, "2024-01-15T14:00:00Z")
    tape.signal("a", "S", "2024-01-15T14:01:00Z", price=100.0, target_notional=5_000)

    (decision,) = tape.run(CONFIG).decisions

    assert (decision.action.value, decision.qty, decision.layer.value, decision.reason) == (
        "CLIP",
        100,
        "account",
        "buying_power",
    )
    assert [(c.layer.value, c.reason, c.before, c.after) for c in decision.clips] == [
        ("account", "buying_power", 5_000, 0)
    ]


def test_buy_when_no_cash_seen_yet_then_passes_and_facts_say_so() -> None:
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=100.0, target_notional=50_000)

    (decision,) = tape.run(CONFIG).decisions

    assert (decision.action.value, decision.qty) == ("ALLOW", 500)
    assert (decision.facts["cash"], decision.facts["buying_power"]) == (None, None)


def test_buying_power_when_off_then_cash_changes_nothing() -> None:
    off = {"risk": {**CONFIG["risk"], "account": {}}}
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000, cash=100)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=100.0, target_notional=50_000)

    (decision,) = tape.run(off).decisions

    assert (decision.action.value, decision.qty, decision.facts["buying_power"]) == ("ALLOW", 500, None)


def test_buying_power_after_the_entry_quota_when_both_bind_then_layer_is_the_last_one_that_cut() -> None:
    both = {"risk": {**CONFIG["risk"], "account": {"buying_power": {"multiplier": 1}, "daily_entry_quota_pct": 0.3}}}
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000, cash=20_000)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=100.0, target_notional=50_000)

    (decision,) = tape.run(both).decisions

    # Quota 30,000 cuts 50,000 first; then buying power 20,000.
    assert [(c.reason, c.before, c.after) for c in decision.clips] == [
        ("entry_quota", 50_000, 30_000),
        ("buying_power", 30_000, 20_000),
    ]
    assert (decision.qty, decision.reason) == (200, "buying_power")
