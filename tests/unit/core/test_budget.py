"""Dynamic risk budget (SPEC §6.7, seed 002): regimes from signed SET_REGIME or the benchmark classifier,
the gross budget as a cap in the decision kernel, recommendations on each trigger's edge, auto runs.

The worked example of docs/budget.md: equity 100,000, X held 100 at 100 (10,000), a signal for a
target of 50,000 at 100 (band 5 %: buy 37,500 to the lower edge, 375 shares).
- bull   (0.8 × 1.5): budget 120,000, room 110,000 -> ALLOW BUY 375
- bear   (0.4 × 0.5): budget  20,000, room  10,000 -> CLIP  BUY 100 (portfolio / budget_cap)
- crisis (0.2 × 0.2): budget   4,000, gross 10,000 already over -> DENY (portfolio / budget_cap)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from schemas.config import ConfigError, RegimeClassifier, config_from_dict
from schemas.outputs import Decision, RebalanceRun, RiskEvent
from streams.cli import app
from streams.core.kernel.decision import TradeContext, evaluate
from streams.core.levels.market import regime as rg
from streams.testing import TapeBuilder, TapeResult
from streams.verify import verify

KEY = b"k"
T0 = "2024-01-15T14:00:00Z"
LATER = "2024-01-15T15:00:00Z"
CONFIG: dict[str, Any] = {
    "risk": {
        "clusters": {"cap_pct": None},
        "concentration": {"position": [0.5, 0.6], "cluster": [0.5, 0.6]},
    },
    "budget": {"enabled": True},
}


def _example(*controls: tuple[str, str, str, bytes | None]) -> TapeBuilder:
    """The docs/budget.md book; each control is (account, regime, nonce, key) at 14:01."""
    tape = TapeBuilder().equity("a", T0, 100_000).flat_bar("X", T0, 100.0)
    tape.fill("a", "X", "BUY", 100, 100.0, "2024-01-15T14:00:10Z", fill_id="f0")
    for account, regime, nonce, key in controls:
        tape.control("SET_REGIME", account, "2024-01-15T14:01:00Z", nonce, LATER, key, regime=regime)
    return tape.signal("a", "X", "2024-01-15T14:02:00Z", price=100.0, target_notional=50_000, signal_id="s1")


def _signal(result: TapeResult) -> Decision:
    (decision,) = [d for d in result.decisions if d.origin.value == "signal"]
    return decision


def _recommendations(result: TapeResult, trigger: str | None = None) -> list[RiskEvent]:
    events = [e for e in result.events if e.kind == "budget_recommendation"]
    return [e for e in events if trigger is None or e.details["trigger"] == trigger]


# ----------------------------------------------------------------- the gross budget in the kernel


@pytest.mark.parametrize(
    ("regime", "cap", "verdict"),
    [
        (None, 120_000.0, ("ALLOW", 375, "per_symbol", "buy_to_lower_bound")),
        ("bull", 120_000.0, ("ALLOW", 375, "per_symbol", "buy_to_lower_bound")),
        ("bear", 20_000.0, ("CLIP", 100, "portfolio", "budget_cap")),
        ("crisis", 4_000.0, ("DENY", 0, "portfolio", "budget_cap")),
    ],
)
def test_signed_set_regime_when_regime_tightens_then_budget_cap_clips_the_same_trade(
    regime: str | None, cap: float, verdict: tuple[str, int, str, str]
) -> None:
    controls = [("a", regime, "n1", KEY)] if regime is not None else []

    decision = _signal(_example(*controls).run(CONFIG, control_key=KEY))

    assert (decision.action.value, decision.qty, decision.layer.value, decision.reason) == verdict
    assert decision.facts["budget_cap"] == cap
    assert decision.facts["regime"] == (regime or "bull")


def test_budget_cap_when_bear_then_clip_record_shows_37500_cut_to_10000() -> None:
    decision = _signal(_example(("a", "bear", "n1", KEY)).run(CONFIG, control_key=KEY))

    assert [(c.layer.value, c.reason, c.before, c.after) for c in decision.clips] == [
        ("portfolio", "budget_cap", 37_500.0, 10_000.0)
    ]


def test_budget_cap_when_recomputed_from_facts_then_same_verdict() -> None:
    decision = _signal(_example(("a", "bear", "n1", KEY)).run(CONFIG, control_key=KEY))

    outcome = evaluate(TradeContext.from_facts(decision.facts))

    assert (outcome.action, outcome.qty, outcome.reason) == ("CLIP", 100, "budget_cap")
    without = evaluate(TradeContext.from_facts({**decision.facts, "budget_cap": None}))
    assert (without.action, without.qty) == ("ALLOW", 375)


def test_budget_when_disabled_then_no_cap_and_set_regime_changes_no_decision() -> None:
    config = {**CONFIG, "budget": {"enabled": False}}

    decision = _signal(_example(("a", "crisis", "n1", KEY)).run(config, control_key=KEY))

    assert (decision.action.value, decision.qty) == ("ALLOW", 375)
    assert decision.facts["budget_cap"] is None and "regime" not in decision.facts


def test_exits_when_over_budget_then_never_clipped() -> None:
    tape = _example(("a", "crisis", "n1", KEY))
    tape.signal("a", "X", "2024-01-15T14:03:00Z", price=100.0, target_notional=0, signal_id="s2")

    result = tape.run(CONFIG, control_key=KEY)

    close = next(d for d in result.decisions if d.source_id == "s2")
    assert (close.action.value, close.side.value, close.qty) == ("ALLOW", "SELL", 100)  # type: ignore[union-attr]


# ----------------------------------------------------------------- SET_REGIME


def test_set_regime_when_unsigned_or_forged_then_nothing_changes() -> None:
    for key in (None, b"not-the-key"):
        result = _example(("a", "crisis", "n1", key)).run(CONFIG, control_key=KEY)

        assert (_signal(result).action.value, _signal(result).qty) == ("ALLOW", 375)
        assert [e.kind for e in result.events if e.kind in ("security", "budget_recommendation")] == ["security"]
        assert result.engine.account.budgets["a"].regime == "bull"


def test_set_regime_when_unknown_regime_then_bad_control_dead_lettered_and_nothing_changes() -> None:
    result = _example(("a", "panic", "n1", KEY)).run(CONFIG, control_key=KEY)

    assert (_signal(result).action.value, _signal(result).qty) == ("ALLOW", 375)
    (letter,) = [o.value for o in result.topic("deadletter")]
    assert letter.error == (  # type: ignore[attr-defined]
        "bad control: SET_REGIME params.regime must be one of auto, bear, bull, crisis; got 'panic'"
    )
    assert [e.kind for e in result.events if e.kind != "cluster_map"] == ["control_rejected"]
    assert "n1" not in result.engine.account.gate.nonces  # a bad control does not use up its nonce


def test_set_regime_when_star_then_every_account_and_auto_returns_to_the_classifier() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000).equity("b", T0, 100_000)
    tape.control("SET_REGIME", "a", "2024-01-15T14:01:00Z", "n1", LATER, KEY, regime="bear")
    tape.control("SET_REGIME", "*", "2024-01-15T14:02:00Z", "n2", LATER, KEY, regime="crisis")
    star = tape.run(CONFIG, control_key=KEY)
    tape.control("SET_REGIME", "b", "2024-01-15T14:03:00Z", "n3", LATER, KEY, regime="auto")
    auto = tape.run(CONFIG, control_key=KEY)

    assert {a: b.regime for a, b in star.engine.account.budgets.items()} == {"a": "crisis", "b": "crisis"}
    assert {a: b.regime for a, b in auto.engine.account.budgets.items()} == {"a": "crisis", "b": "crisis"}
    assert auto.engine.account.budgets["b"].source == "control"  # `*` still pins b: auto only drops b's own pin
    tape.control("SET_REGIME", "*", "2024-01-15T14:04:00Z", "n4", LATER, KEY, regime="auto")
    released = tape.run(CONFIG, control_key=KEY)
    assert {(b.regime, b.source) for b in released.engine.account.budgets.values()} == {("bull", "initial")}


# ----------------------------------------------------------------- recommendations on the edge


def test_regime_change_when_set_twice_then_one_recommendation_per_change() -> None:
    tape = _example(("a", "bear", "n1", KEY), ("a", "bear", "n2", KEY), ("a", "crisis", "n3", KEY))

    result = tape.run(CONFIG, control_key=KEY)

    changes = _recommendations(result, "regime_change")
    assert [(e.details["previous_regime"], e.details["regime"]) for e in changes] == [
        ("bull", "bear"),
        ("bear", "crisis"),
    ]
    first = changes[0].details
    assert (first["previous_budget_gross_cap"], first["budget_gross_cap"]) == (120_000.0, 20_000.0)
    assert first["recommended"] == {"action": "rebalance", "gross_cap": 20_000.0}
    assert len({e.event_id for e in changes}) == 2


def _daily_equity(tape: TapeBuilder, values: list[float], start_day: int = 15) -> TapeBuilder:
    for offset, value in enumerate(values):
        tape.equity("a", f"2024-01-{start_day + offset:02d}T21:00:00Z", value)
    return tape


def test_vol_breach_when_realized_vol_crosses_the_limit_then_one_recommendation_until_it_clears() -> None:
    # Day closes 100k, 104k, 100k, 104k: returns +4 %, -3.85 %, +4 % -> vol ~ 0.63 >= 1.5 x 0.15 = 0.225.
    config = {**CONFIG, "budget": {"enabled": True, "vol_min_periods": 2, "vol_window": 3}}
    swings = [100_000, 104_000, 100_000, 104_000, 100_000, 104_000]
    calm = [104_000, 104_100, 104_200, 104_300]
    tape = _daily_equity(TapeBuilder(), [*swings, *calm, *swings[1:]], start_day=1)

    result = tape.run(config)

    breaches = _recommendations(result, "vol_breach")
    assert len(breaches) == 2  # the swings, then calm clears it, then the swings again
    first = breaches[0].details
    assert first["threshold"] == pytest.approx(0.225) and first["observed"] >= 0.225
    assert first["recommended"]["action"] == "reduce_exposure"
    assert first["recommended"]["scale"] == pytest.approx(0.15 / first["observed"])


def test_correlation_spike_when_symbols_move_together_then_one_recommendation_per_account() -> None:
    config = {**CONFIG, "risk": {**CONFIG["risk"], "clusters": {"cap_pct": None, "window": 4, "min_periods": 3}}}
    tape = TapeBuilder().equity("a", T0, 100_000).equity("b", T0, 100_000)
    for minute, price in enumerate([100, 101, 99, 102, 100, 103, 101, 104]):
        ts = f"2024-01-15T14:{minute + 1:02d}:00Z"
        tape.flat_bar("X", ts, price).flat_bar("Y", ts, price / 2)

    result = tape.run(config)

    spikes = _recommendations(result, "correlation_spike")
    assert sorted(e.account for e in spikes) == ["a", "b"]  # type: ignore[type-var]
    assert spikes[0].details["observed"] == pytest.approx(1.0) and spikes[0].details["threshold"] == 0.8
    assert [e.kind for e in result.events if e.kind == "correlation_spike"] == ["correlation_spike"]


def test_drift_when_a_fill_moves_a_weight_past_the_threshold_then_one_recommendation() -> None:
    config = {**CONFIG, "rebalance": {"targets": {"X": 0.5, "Y": 0.5}, "max_position_weight": 0.6}}
    tape = TapeBuilder().equity("a", T0, 100_000)  # an empty book against 50/50 targets: drift 0.5 (X, Y tie)
    tape.flat_bar("X", T0, 100.0).flat_bar("Y", T0, 50.0)
    tape.fill("a", "X", "BUY", 550, 100.0, "2024-01-15T14:00:10Z", fill_id="f1")  # X 55 %: Y still 0.5 off
    tape.fill("a", "Y", "BUY", 900, 50.0, "2024-01-15T14:00:20Z", fill_id="f2")  # X 55 %, Y 45 %: 0.05, clears
    tape.fill("a", "X", "BUY", 100, 100.0, "2024-01-15T14:00:30Z", fill_id="f3")  # X 65 %: 0.15 again
    tape.equity("a", "2024-01-15T14:01:00Z", 100_100)  # still drifted: no new recommendation

    result = tape.run(config)

    drifts = _recommendations(result, "drift")
    assert [(e.ts, round(e.details["observed"], 4), e.details["recommended"]["symbol"]) for e in drifts] == [
        (1705327200000, 0.5, "X"),  # the equity report at 14:00
        (1705327230000, 0.15, "X"),  # fill f3 at 14:00:30
    ]
    assert all(e.details["run_id"] is None for e in drifts)


# ----------------------------------------------------------------- auto_rebalance


def test_auto_rebalance_when_regime_turns_bear_then_a_budget_run_scaled_to_the_budget() -> None:
    # Targets 50/50 sum to 1.0; bear allows 0.4 x 0.5 = 0.2 of equity: targets scale to 10 % each.
    config = {
        **CONFIG,
        "budget": {"enabled": True, "auto_rebalance": True, "rebalancing_triggers": {"drift_threshold": 5}},
        "rebalance": {"targets": {"X": 0.5, "Y": 0.5}, "budget_pct": 1.0, "min_trade_value": 100},
    }
    tape = TapeBuilder().equity("a", T0, 100_000).flat_bar("X", T0, 100.0).flat_bar("Y", T0, 50.0)
    tape.fill("a", "X", "BUY", 400, 100.0, "2024-01-15T14:00:10Z", fill_id="f0")  # X 40 %
    tape.control("SET_REGIME", "a", "2024-01-15T14:01:00Z", "n1", LATER, KEY, regime="bear")

    result = tape.run(config, control_key=KEY)

    runs = [o.value for o in result.outputs if isinstance(o.value, RebalanceRun)]
    (run,) = [r for r in runs if r.trigger == "budget"]
    (change,) = _recommendations(result, "regime_change")
    assert change.details["run_id"] == run.run_id and change.details["auto_rebalance"] is True
    assert run.inputs["budget"]["scale"] == pytest.approx(0.2)
    assert run.inputs["target_weights"] == {"X": pytest.approx(0.1), "Y": pytest.approx(0.1)}
    assert run.inputs["budget_triggers"] == ["regime_change"]
    # X 40,000 -> 10,000: sell 300 first (orders go by symbol); the pending sell is in the projected book,
    # so Y 0 -> 10,000 (buy 200) fills the 20,000 budget exactly: gross 10,000 + 10,000.
    decisions = {d.symbol: d for d in result.decisions if d.origin.value == "rebalance"}
    verdicts = {s: (d.action.value, d.side.value, d.qty) for s, d in decisions.items() if d.side is not None}
    assert verdicts == {"X": ("ALLOW", "SELL", 300), "Y": ("ALLOW", "BUY", 200)}
    assert decisions["Y"].facts["gross"] == 10_000.0 and decisions["Y"].facts["budget_cap"] == 20_000.0


def test_auto_rebalance_when_drift_fires_then_run_on_the_same_fill_clears_vetoes() -> None:
    config = {
        **CONFIG,
        "risk": {**CONFIG["risk"], "stops": {"default": {"stop_loss_pct": 0.02}}},
        "budget": {"enabled": True, "auto_rebalance": True, "rebalancing_triggers": {"drift_threshold": 0.3}},
        "rebalance": {"targets": {"X": 0.3, "Y": 0.3}, "budget_pct": 1.0, "min_trade_value": 100},
    }
    tape = TapeBuilder().equity("a", T0, 100_000).flat_bar("X", T0, 100.0).flat_bar("Y", T0, 50.0)
    tape.fill("a", "Y", "BUY", 400, 50.0, "2024-01-15T14:00:05Z", fill_id="f0")
    tape.bar("Y", "2024-01-15T14:00:30Z", 49.5, 49.5, 48.0, 48.5)  # Y stopped out: vetoed
    tape.fill("a", "Y", "SELL", 400, 49.0, "2024-01-15T14:00:40Z", fill_id="f1")
    tape.fill("a", "X", "BUY", 650, 100.0, "2024-01-15T14:01:00Z", fill_id="f2")  # X 65 %: drift 0.35

    result = tape.run(config)

    (drift,) = _recommendations(result, "drift")
    runs = [o.value for o in result.outputs if isinstance(o.value, RebalanceRun)]
    assert [(r.trigger, r.run_id) for r in runs] == [("budget", drift.details["run_id"])]
    assert not result.engine.symbol.books["a"].symbols["Y"].vetoed


# ----------------------------------------------------------------- the classifier


def _params(**overrides: Any) -> RegimeClassifier:
    return RegimeClassifier(**{"window": 5, "min_periods": 3, **overrides})


def test_classify_when_fewer_returns_than_min_periods_then_no_reading() -> None:
    assert rg.classify([100, 101, 102], _params()) is None


def test_classify_when_drawdown_5_pct_then_bear_and_10_pct_then_crisis() -> None:
    flat = [100.0, 100.0, 100.0, 100.0]

    assert rg.classify([*flat, 100.0], _params()).regime == "bull"  # type: ignore[union-attr]
    bear = rg.classify([*flat, 95.0], _params(bear_vol=10, crisis_vol=20))
    crisis = rg.classify([*flat, 89.0], _params(bear_vol=10, crisis_vol=20))
    assert bear is not None and (bear.regime, round(bear.drawdown, 6)) == ("bear", 0.05)
    assert crisis is not None and (crisis.regime, round(crisis.drawdown, 6)) == ("crisis", 0.11)


def test_classify_when_vol_crosses_thresholds_then_bear_then_crisis() -> None:
    # Returns alternate +-1 %: stdev ~1.1 % a bar, x sqrt(252) ~ 0.17 annualized.
    closes = [100.0, 101.0, 100.0, 101.0, 100.0, 101.0]
    reading = rg.classify(closes, _params(bear_drawdown=0.5, crisis_drawdown=0.6))

    assert reading is not None and 0.17 < reading.vol < 0.18
    assert rg.classify(closes, _params(bear_vol=0.15, bear_drawdown=0.5, crisis_drawdown=0.6)).regime == "bear"  # type: ignore[union-attr]
    assert (
        rg.classify(closes, _params(bear_vol=0.1, crisis_vol=0.15, bear_drawdown=0.5, crisis_drawdown=0.6)).regime
        == "crisis"
    )  # type: ignore[union-attr]


def test_observe_when_regime_unchanged_then_no_new_reading() -> None:
    state = rg.ClassifierState()
    readings = [rg.observe(state, close, _params()) for close in [100.0, 100.0, 100.0, 100.0, 94.0, 94.0]]

    assert [r.regime if r else None for r in readings] == [None, None, None, "bull", "crisis", None]
    assert len(state.closes) == 6


def test_classifier_when_benchmark_falls_then_market_regime_event_and_account_regime_follows() -> None:
    config = {**CONFIG, "budget": {"enabled": True, "benchmark": "IDX", "classifier": {"window": 5, "min_periods": 3}}}
    tape = TapeBuilder().equity("a", T0, 100_000)
    for minute, close in enumerate([100.0, 100.0, 100.0, 100.0, 94.0]):
        tape.flat_bar("IDX", f"2024-01-15T14:{minute + 1:02d}:00Z", close)

    result = tape.run(config)

    regimes = [(e.details["previous"], e.details["regime"]) for e in result.events if e.kind == "market_regime"]
    assert regimes == [(None, "bull"), ("bull", "crisis")]
    (change,) = _recommendations(result, "regime_change")
    assert (change.details["regime"], change.details["source"]) == ("crisis", "classifier")
    assert result.engine.portfolio.books["a"].view.regime == "crisis"  # type: ignore[union-attr]


def test_classifier_when_regime_pinned_by_control_then_pin_wins() -> None:
    config = {**CONFIG, "budget": {"enabled": True, "benchmark": "IDX", "classifier": {"window": 5, "min_periods": 3}}}
    tape = TapeBuilder().equity("a", T0, 100_000)
    tape.control("SET_REGIME", "a", "2024-01-15T14:00:30Z", "n1", LATER, KEY, regime="bull")
    for minute, close in enumerate([100.0, 100.0, 100.0, 100.0, 94.0]):
        tape.flat_bar("IDX", f"2024-01-15T14:{minute + 1:02d}:00Z", close)

    result = tape.run(config, control_key=KEY)

    assert result.engine.account.budgets["a"].regime == "bull"
    assert _recommendations(result, "regime_change") == []


# ----------------------------------------------------------------- config, determinism, audit


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ({"initial_regime": "boom"}, "initial_regime 'boom' is not in regime_allocations"),
        (
            {
                "benchmark": "SPY",
                "regime_allocations": {"bull": {"equity_allocation": 1, "leverage_limit": 1, "vol_target": 0.1}},
            },
            "needs regime_allocations for ['bear', 'crisis']",
        ),
        ({"classifier": {"bear_vol": 0.5, "crisis_vol": 0.3}}, "bear thresholds must not exceed crisis"),
    ],
)
def test_budget_config_when_inconsistent_then_error_names_it(budget: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="budget") as raised:
        config_from_dict({"budget": budget})

    assert message in str(raised.value)


def test_budget_config_when_seed_002_block_then_loads() -> None:
    seed = {
        "enabled": True,
        "monitoring_interval": 60,
        "regime_allocations": {
            "bull": {"equity_allocation": 0.8, "leverage_limit": 1.5, "vol_target": 0.15},
            "bear": {"equity_allocation": 0.4, "leverage_limit": 0.5, "vol_target": 0.08},
            "crisis": {"equity_allocation": 0.2, "leverage_limit": 0.2, "vol_target": 0.05},
        },
        "rebalancing_triggers": {
            "drift_threshold": 0.1,
            "regime_change": True,
            "correlation_spike": 0.8,
            "vol_breach": 1.5,
        },
    }

    config = config_from_dict({"budget": seed})

    assert config.budget.monitoring_interval == 60_000
    assert config.budget.regime_allocations["bear"].leverage_limit == 0.5


def test_replay_when_budget_on_then_twice_byte_identical_and_verify_passes() -> None:
    config = {
        **CONFIG,
        "budget": {"enabled": True, "auto_rebalance": True},
        "rebalance": {"targets": {"X": 0.5, "Y": 0.5}, "budget_pct": 1.0, "min_trade_value": 100},
    }
    tape = _example(("a", "bear", "n1", KEY))
    tape.flat_bar("Y", "2024-01-15T14:03:00Z", 50.0)
    tape.control("SET_REGIME", "a", "2024-01-15T14:04:00Z", "n2", LATER, KEY, regime="crisis")

    first, second = tape.run(config, control_key=KEY), tape.run(config, control_key=KEY)

    assert first.data == second.data
    assert any(d.reason == "budget_cap" for d in first.decisions)
    report = verify(config_from_dict(config), tape.to_bytes(), io.BytesIO(first.data), control_key=KEY)
    assert report.ok, report.problems
    assert report.from_facts == len(first.decisions) > 0


def test_riskguard_verify_when_outputs_carry_budget_caps_then_exit_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISKGUARD_CONTROL_KEY", KEY.decode())
    tape, config, out = tmp_path / "in.jsonl", tmp_path / "c.yaml", tmp_path / "out.jsonl"
    tape.write_bytes(b"\n".join(_example(("a", "bear", "n1", KEY)).to_bytes()) + b"\n")
    config.write_text(orjson.dumps(CONFIG).decode(), encoding="utf-8")  # JSON is YAML
    runner = CliRunner()

    replayed = runner.invoke(app, ["replay", str(tape), "--config", str(config), "--out", str(out)])
    verified = runner.invoke(app, ["verify", str(tape), str(out), "--config", str(config)])

    assert replayed.exit_code == 0 and b'"reason":"budget_cap"' in out.read_bytes()
    assert verified.exit_code == 0, verified.output
    assert "verified" in verified.output
