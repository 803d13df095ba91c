"""The day's entry quota by notional, margin or VaR (SPEC §6.1, seed 000 "Daily Risk Quota"), on worked numbers.

Equity 100,000 all day; caps that would bind first are off (no cluster cap, concentration at 500 %,
no band), so the account layer is the only limit.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

import pytest

from schemas.config import ConfigError, config_from_dict
from streams.testing import TapeBuilder

LOOSE: dict[str, Any] = {
    "clusters": {"cap_pct": None, "window": 5, "min_periods": 3},
    "concentration": {"position": [5, 5], "group": [5, 5], "cluster": [5, 5]},
    "per_symbol": {"band_pct": 0.0},
}


def _config(quota: dict[str, Any], **account: Any) -> dict[str, Any]:
    return {"risk": {**LOOSE, "account": {"daily_entry_quota": quota, **account}}}


def _decisions(tape: TapeBuilder, config: dict[str, Any]) -> list[tuple[str, str, float, str, str]]:
    return [(d.symbol, d.action.value, d.qty, d.layer.value, d.reason) for d in tape.run(config).decisions]


def test_margin_quota_when_rates_differ_then_each_buy_uses_its_symbol_rate() -> None:
    # Quota 50 % of 100,000 = 50,000 of margin. X at 50 %: 60,000 -> 30,000 used. Y at the default 25 %:
    # 100,000 would use 25,000 > 20,000 left -> 80,000 (800 sh), CLIP. Z: nothing left -> DENY.
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000)
    for n, (sym, target) in enumerate((("X", 60_000), ("Y", 100_000), ("Z", 10_000))):
        tape.signal("a", sym, f"2024-01-15T14:0{n + 1}:00Z", price=100.0, target_notional=target)
    config = _config({"measure": "margin", "pct": 0.5}, margin_rates={"default": 0.25, "overrides": {"X": 0.5}})

    result = tape.run(config)

    assert [(d.symbol, d.action.value, d.qty, d.layer.value, d.reason) for d in result.decisions] == [
        ("X", "ALLOW", 600, "per_symbol", "buy_to_lower_bound"),
        ("Y", "CLIP", 800, "account", "entry_quota"),
        ("Z", "DENY", 0, "account", "entry_quota"),
    ]
    x, y, _ = result.decisions
    assert (x.facts["quota_measure"], x.facts["quota_used"], x.facts["quota_headroom"]) == ("margin", 0.0, 50_000)
    assert (y.facts["quota_rate"], y.facts["quota_used"], y.facts["quota_headroom"]) == (0.25, 30_000, 20_000)


def test_notional_shorthand_when_pct_given_then_same_decisions_as_measure_notional() -> None:
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=10.0, target_notional=6_000)
    tape.signal("a", "Y", "2024-01-15T14:02:00Z", price=10.0, target_notional=6_000)
    shorthand = {"risk": {**LOOSE, "account": {"daily_entry_quota_pct": 0.10}}}

    assert _decisions(tape, shorthand) == _decisions(tape, _config({"measure": "notional", "pct": 0.10}))
    assert [d[1:3] for d in _decisions(tape, shorthand)] == [("ALLOW", 600), ("CLIP", 400)]


def _swinging_bars(tape: TapeBuilder, symbol: str) -> list[float]:
    """Closes alternating +1 % / -1 %: four returns; returns them as the engine computes them."""
    closes = [100.0]
    for step in (1.01, 0.99, 1.01, 0.99):
        closes.append(closes[-1] * step)
    for day, close in enumerate(closes):
        tape.flat_bar(symbol, f"2024-01-{day + 10}T21:00:00Z", close)
    tape.flat_bar("OTHER", "2024-01-15T21:00:00Z", 1.0)  # completes the last timestamp of the window
    return [b / a - 1 for a, b in itertools.pairwise(closes)]


def test_var_quota_when_sigma_known_then_opening_limited_to_quota_over_z_sigma() -> None:
    # sigma = stdev(+1 %, -1 %, +1 %, -1 %) = 1.1547 %; z(0.99) = 2.3263; VaR per 1 of notional 2.6862 %.
    # Quota 0.2 % of 100,000 = 200 -> 7,445.4 of notional -> 74 shares at 99.980001.
    tape = TapeBuilder()
    returns = _swinging_bars(tape, "X")
    price = 100.0 * 1.01 * 0.99 * 1.01 * 0.99
    tape.equity("a", "2024-01-15T21:01:00Z", 100_000)
    tape.signal("a", "X", "2024-01-15T21:02:00Z", price=price, target_notional=10_000)

    (decision,) = tape.run(_config({"measure": "var", "pct": 0.002, "confidence": 0.99})).decisions

    sigma = statistics.stdev(returns)
    z = statistics.NormalDist().inv_cdf(0.99)
    assert round(sigma, 6) == 0.011547 and round(z, 4) == 2.3263
    assert decision.facts["quota_rate"] == pytest.approx(z * sigma, rel=1e-12)
    assert (decision.action.value, decision.qty, decision.reason) == ("CLIP", 74, "entry_quota")
    assert decision.qty == int(200 / (z * sigma) / price)


def test_var_quota_when_fewer_returns_than_min_periods_then_counts_at_full_notional() -> None:
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000)
    tape.signal("a", "NEW", "2024-01-15T14:01:00Z", price=10.0, target_notional=6_000)

    (decision,) = tape.run(_config({"measure": "var", "pct": 0.05})).decisions

    # No sigma for NEW: 5,000 of quota buys 5,000 of notional.
    assert (decision.action.value, decision.qty, decision.facts["quota_rate"]) == ("CLIP", 500, 1.0)


def test_quota_when_used_then_risk_reducing_trades_pass_and_use_none() -> None:
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000)
    tape.fill("a", "X", "BUY", 1000, 10.0, "2024-01-15T14:00:00Z")
    tape.signal("a", "Y", "2024-01-15T14:01:00Z", price=10.0, target_notional=10_000)  # uses it all
    tape.signal("a", "X", "2024-01-15T14:02:00Z", price=10.0, target_notional=0)

    result = tape.run(_config({"measure": "margin", "pct": 0.025}))

    assert [(d.symbol, d.action.value, d.qty) for d in result.decisions] == [("Y", "ALLOW", 1000), ("X", "ALLOW", 1000)]


def test_quota_config_when_both_spellings_or_bad_measure_then_error_names_the_key() -> None:
    with pytest.raises(ConfigError, match="daily_entry_quota_pct is the shorthand"):
        config_from_dict({"risk": {"account": {"daily_entry_quota_pct": 0.1, "daily_entry_quota": {"pct": 0.2}}}})
    with pytest.raises(ConfigError, match=r"risk\.account\.daily_entry_quota\.measure"):
        config_from_dict({"risk": {"account": {"daily_entry_quota": {"measure": "risk", "pct": 0.2}}}})
    with pytest.raises(ConfigError, match=r"risk\.account\.margin_rates\.overrides\.X"):
        config_from_dict({"risk": {"account": {"margin_rates": {"overrides": {"X": 1.5}}}}})


def test_quota_when_account_sets_its_own_measure_then_it_replaces_the_file_shorthand() -> None:
    config = config_from_dict(
        {
            "risk": {"account": {"daily_entry_quota_pct": 0.1}},
            "accounts": {"b": {"risk": {"account": {"daily_entry_quota": {"measure": "var", "pct": 0.01}}}}},
        }
    )

    quota_a, quota_b = config.risk_for("a").account.entry_quota, config.risk_for("b").account.entry_quota
    assert quota_a is not None and (quota_a.measure, quota_a.pct) == ("notional", 0.1)
    assert quota_b is not None and (quota_b.measure, quota_b.pct) == ("var", 0.01)
