"""The factor (beta) cap of Level 4 (SPEC §6.2, seed 000 "Factor Neutrality"), on worked numbers.

X moves exactly twice the benchmark SPY over five daily bars (beta 2); symbols without bars have beta
1.0. Equity 100,000 and `max_abs_beta_pct: 0.5` give a cap of 50,000 of beta exposure.
"""

from __future__ import annotations

from typing import Any

import pytest

from schemas.config import ConfigError, config_from_dict
from streams.testing import TapeBuilder

SPY_RETURNS = (0.01, -0.01, 0.02, -0.005)


def _config(**factor: Any) -> dict[str, Any]:
    return {
        "risk": {
            "factor": {"benchmark": "SPY", "beta_window": 5, "min_periods": 3, "max_abs_beta_pct": 0.5, **factor},
            "clusters": {"cap_pct": None, "window": 5, "min_periods": 3},
            "concentration": {"position": [5, 5], "group": [5, 5], "cluster": [5, 5]},
            "per_symbol": {"band_pct": 0.0},
        }
    }


def _market(tape: TapeBuilder) -> TapeBuilder:
    """SPY and X (twice SPY's returns, last close 100), then a bar that completes the last day."""
    spy, x = [100.0], [100.0]
    for r in SPY_RETURNS:
        spy.append(spy[-1] * (1 + r))
        x.append(x[-1] * (1 + 2 * r))
    x = [c * 100.0 / x[-1] for c in x]
    for day in range(5):
        tape.flat_bar("SPY", f"2024-01-{day + 10}T21:00:00Z", spy[day]).flat_bar(
            "X", f"2024-01-{day + 10}T21:00:00Z", x[day]
        )
    tape.flat_bar("SPY", "2024-01-15T14:00:00Z", spy[-1])
    return tape.equity("a", "2024-01-15T14:00:01Z", 100_000)


def test_factor_cap_when_trades_raise_and_lower_beta_exposure_then_clip_pass_clip_deny() -> None:
    tape = _market(TapeBuilder())
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=100.0, target_notional=40_000)  # B 80,000 > 50,000
    tape.signal("a", "Y", "2024-01-15T14:02:00Z", price=50.0, target_notional=-30_000)  # toward zero: passes
    tape.signal("a", "Z", "2024-01-15T14:03:00Z", price=100.0, target_notional=60_000)  # B 20,000: room 30,000
    tape.signal("a", "W", "2024-01-15T14:04:00Z", price=100.0, target_notional=1_000)  # B at the cap

    result = tape.run(_config())

    assert [
        (d.symbol, d.action.value, d.side and d.side.value, d.qty, d.layer.value, d.reason) for d in result.decisions
    ] == [
        ("X", "CLIP", "BUY", 250, "factor", "beta_cap"),  # 25,000 x beta 2 lands B on 50,000
        ("Y", "ALLOW", "SELL", 600, "per_symbol", "sell_to_upper_bound"),
        ("Z", "CLIP", "BUY", 300, "factor", "beta_cap"),
        ("W", "DENY", "BUY", 0, "factor", "beta_cap"),
    ]
    x, y, z, _ = result.decisions
    assert x.facts["beta"] == pytest.approx(2.0, rel=1e-9)
    assert (x.facts["beta_exposure"], x.facts["beta_cap"]) == (0.0, 50_000)
    assert y.facts["beta"] == 1.0 and y.facts["beta_exposure"] == pytest.approx(50_000, rel=1e-9)
    assert z.facts["beta_exposure"] == pytest.approx(20_000, rel=1e-9)


def test_factor_cap_when_benchmark_set_without_a_cap_then_facts_only() -> None:
    tape = _market(TapeBuilder())
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=100.0, target_notional=40_000)

    (decision,) = tape.run(_config(max_abs_beta_pct=None)).decisions

    assert (decision.action.value, decision.qty, decision.facts["beta_cap"]) == ("ALLOW", 400, None)
    assert decision.facts["beta"] == pytest.approx(2.0, rel=1e-9)


def test_factor_cap_when_no_benchmark_then_no_beta_facts_and_no_check() -> None:
    tape = _market(TapeBuilder())
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=100.0, target_notional=40_000)
    config = _config()
    config["risk"]["factor"] = {"max_abs_beta_pct": 0.5}

    (decision,) = tape.run(config).decisions

    assert (decision.action.value, decision.facts["beta"], decision.facts["beta_cap"]) == ("ALLOW", None, None)


def test_factor_cap_when_regime_sets_its_own_then_the_regime_cap_binds() -> None:
    config = _config()
    config["budget"] = {
        "enabled": True,
        "initial_regime": "bear",
        "regime_allocations": {
            "bear": {"equity_allocation": 1.0, "leverage_limit": 10, "vol_target": 0.1, "max_abs_beta_pct": 0.1}
        },
    }
    tape = _market(TapeBuilder())
    tape.signal("a", "Z", "2024-01-15T14:01:00Z", price=100.0, target_notional=40_000)

    (decision,) = tape.run(config).decisions

    # The bear regime caps |B| at 10 % of 100,000 = 10,000; Z has beta 1.
    assert (decision.action.value, decision.qty, decision.reason, decision.facts["beta_cap"]) == (
        "CLIP",
        100,
        "beta_cap",
        10_000,
    )


def test_factor_config_when_an_account_sets_a_market_wide_key_then_error_names_it() -> None:
    with pytest.raises(ConfigError, match=r"factor\.benchmark is market-wide"):
        config_from_dict({"accounts": {"a": {"risk": {"factor": {"benchmark": "QQQ"}}}}})
    config = config_from_dict({"accounts": {"a": {"risk": {"factor": {"max_abs_beta_pct": 0.3}}}}})
    assert config.risk_for("a").factor.max_abs_beta_pct == 0.3
