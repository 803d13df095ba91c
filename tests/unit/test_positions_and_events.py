"""Projected positions (pending decisions, pending_ttl), duplicates, ordering, shadow mode, warnings."""

from __future__ import annotations

from typing import Any

from streams.testing import TapeBuilder

T0 = "2024-01-15T14:00:00Z"
BASE: dict[str, Any] = {"risk": {"clusters": {"cap_pct": None}, "per_symbol": {"band_pct": 0.0}, "pending_ttl": "5m"}}


def test_second_signal_when_first_decision_unfilled_then_pending_counts_in_projection() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=10.0, target_notional=1_000)
    tape.signal("a", "X", "2024-01-15T14:02:00Z", price=10.0, target_notional=2_000)

    first, second = tape.run(BASE).decisions

    assert (first.qty, second.qty) == (100, 100)
    assert (second.facts["filled_qty"], second.facts["pending_qty"]) == (0.0, 100.0)


def test_pending_when_ttl_passes_unfilled_then_it_expires() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=10.0, target_notional=1_000)
    tape.signal("a", "X", "2024-01-15T14:06:00Z", price=10.0, target_notional=2_000)  # exactly 5 min later

    _, second = tape.run(BASE).decisions

    assert second.facts["pending_qty"] == 0.0
    assert second.qty == 200


def test_fill_when_it_carries_decision_id_then_settles_pending_without_double_count() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=10.0, target_notional=1_000)
    result = tape.run(BASE)
    did = result.decisions[0].decision_id
    tape.fill("a", "X", "BUY", 60, 10.0, "2024-01-15T14:01:10Z", decision_id=did)
    tape.signal("a", "X", "2024-01-15T14:02:00Z", price=10.0, target_notional=2_000)

    second = tape.run(BASE).decisions[1]

    assert (second.facts["filled_qty"], second.facts["pending_qty"]) == (60.0, 40.0)
    assert second.qty == 100


def test_duplicate_fill_and_signal_ids_when_replayed_then_ignored_and_counted() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000)
    tape.fill("a", "X", "BUY", 10, 10.0, "2024-01-15T14:01:00Z", fill_id="dup")
    tape.fill("a", "X", "BUY", 10, 10.0, "2024-01-15T14:01:00Z", fill_id="dup")
    tape.signal("a", "X", "2024-01-15T14:02:00Z", signal_id="s", price=10.0, target_notional=1_000)
    tape.signal("a", "X", "2024-01-15T14:02:00Z", signal_id="s", price=10.0, target_notional=1_000)

    result = tape.run(BASE)

    assert result.engine.position("a", "X").qty == 10
    assert len(result.decisions) == 1
    assert result.engine.stats["duplicates"] == 2


def test_bar_when_older_than_last_bar_of_symbol_then_ignored() -> None:
    tape = TapeBuilder().flat_bar("X", "2024-01-15T14:02:00Z", 10.0).flat_bar("X", "2024-01-15T14:01:00Z", 99.0)

    result = tape.run(BASE)

    assert result.engine.last_close("X") == 10.0
    assert result.engine.stats["out_of_order"] == 1


def test_shadow_mode_when_deciding_then_marked_shadow_and_not_pending() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=10.0, target_notional=1_000)
    tape.signal("a", "X", "2024-01-15T14:02:00Z", price=10.0, target_notional=2_000)

    first, second = tape.run({**BASE, "mode": "shadow"}).decisions

    assert first.mode.value == second.mode.value == "shadow"
    assert second.facts["pending_qty"] == 0.0 and second.qty == 200


def test_position_when_crossing_concentration_warning_then_event_and_heat_in_facts() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=10.0, target_notional=25_000)

    result = tape.run(BASE)

    (decision,) = result.decisions
    warnings = [e for e in result.events if e.kind == "concentration_warning"]
    assert [(w.details["bucket"], w.details["name"]) for w in warnings] == [("position", "X")]
    assert abs(decision.facts["heat"] - 0.6 * 25 / 30) < 1e-9  # no ATR yet: exposure part only


def test_position_when_above_critical_weight_then_clipped_to_thirty_pct() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=10.0, target_notional=40_000)

    (decision,) = tape.run(BASE).decisions

    assert (decision.action.value, decision.layer.value, decision.reason) == (
        "CLIP",
        "portfolio",
        "concentration_position",
    )
    assert decision.notional == 30_000


def test_ids_when_same_inputs_then_same_decision_and_halt_ids() -> None:
    def session() -> TapeBuilder:
        tape = TapeBuilder().equity("a", T0, 100_000)
        tape.signal("a", "X", "2024-01-15T14:01:00Z", signal_id="s1", price=10.0, target_notional=1_000)
        return tape.equity("a", "2024-01-15T14:02:00Z", 80_000)

    one, two = session().run(BASE), session().run(BASE)

    assert [d.decision_id for d in one.decisions] == [d.decision_id for d in two.decisions]
    assert [h.halt_id for h in one.halts] == [h.halt_id for h in two.halts] and one.halts
