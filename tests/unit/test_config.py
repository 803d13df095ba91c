"""Configuration (SPEC §5): seed 001 loads unchanged, profiles, overrides, errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import PROFILES, ConfigError, config_from_dict, load_config


def test_load_when_seed001_yaml_unchanged_then_every_seed_key_is_read(seed001_path: Path) -> None:
    config = load_config(seed001_path)

    risk = config.risk
    assert (risk.per_trade.max_notional, risk.per_trade.lot_size, risk.per_trade.min_order_notional) == (1500, 5, 200)
    assert risk.per_symbol.cap_for("NVDA") == 20_000 and risk.per_symbol.cap_for("AAPL") == 15_000
    assert risk.per_symbol.rebalance_cadence == 30 * 60_000
    assert risk.groups.cap_for("Financial") == 50_000 and risk.groups.cap_for("Energy") == 40_000
    assert (risk.portfolio.gross_cap, risk.portfolio.net_cap) == (100_000, 20_000)
    assert risk.portfolio.vol_target.enabled and risk.portfolio.vol_target.target_daily_vol == 0.01
    assert config.policy.rebalance_triggers.signal_change_threshold == 0.05


def test_config_when_frozen_then_assignment_fails(seed001_path: Path) -> None:
    config = load_config(seed001_path)
    with pytest.raises(ValueError, match="frozen"):
        config.risk.per_trade.lot_size = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"risk": {"per_trade": {"lot_size": 0}}}, "risk.per_trade.lot_size"),
        ({"risk": {"per_symbol": {"rebalance_cadence": "soon"}}}, "risk.per_symbol.rebalance_cadence"),
        ({"risk": {"account": {"timezone": "Mars/Olympus"}}}, "risk.account.timezone"),
        ({"risk": {"account": {"daily_loss": {"of": "yesterday"}}}}, "risk.account.daily_loss.of"),
        ({"risk": {"per_tarde": {}}}, "risk.per_tarde"),
        ({"accounts": {"a1": {"profile": "nope"}}}, "accounts.a1.profile"),
        ({"mode": "yolo"}, "mode"),
    ],
)
def test_load_when_key_invalid_then_error_names_the_key_path(data: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data, "bad.yaml")
    assert path in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_load_when_yaml_broken_then_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("risk: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_account_when_profile_and_overrides_then_file_then_profile_then_account_keys_win() -> None:
    config = config_from_dict(
        {
            "risk": {"per_trade": {"lot_size": 10}, "account": {"max_total_loss_pct": 0.2}},
            "accounts": {
                "f": {"profile": "ftmo", "initial_balance": 200_000},
                "h": {"profile": "high_leverage", "risk": {"clusters": {"cap_pct": 0.35}}},
            },
        }
    )

    ftmo = config.risk_for("f")
    assert ftmo.account.timezone == "Europe/Prague" and ftmo.account.initial_balance == 200_000
    assert ftmo.account.max_total_loss_pct == 0.10  # profile beats the file
    assert ftmo.per_trade.lot_size == 10  # untouched file keys stay
    high = config.risk_for("h")
    assert high.account.daily_loss is not None and high.account.daily_loss.limit_pct == 0.03
    assert high.clusters.cap_pct == 0.35  # account key beats the profile
    assert config.risk_for("other").account.max_total_loss_pct == 0.2


def test_profiles_when_loaded_then_each_is_valid_and_matches_seed_table() -> None:
    for name in PROFILES:
        risk = config_from_dict({"accounts": {"x": {"profile": name}}}).risk_for("x")
        assert risk.account is not None
    std = config_from_dict({"profile": "standard"}).risk_for("x").account
    assert std.daily_loss is not None and (std.daily_loss.limit_pct, std.max_total_loss_pct) == (0.05, 0.10)
    five = config_from_dict({"profile": "the5ers"}).risk_for("x").account
    assert five.daily_loss is not None and five.daily_loss.basis == "max" and five.reset_time == "17:00"


def test_config_version_when_same_content_then_same_hash_and_explicit_version_wins() -> None:
    a = config_from_dict({"risk": {"per_trade": {"lot_size": 5}}})
    b = config_from_dict({"risk": {"per_trade": {"lot_size": 5}}})
    c = config_from_dict({"risk": {"per_trade": {"lot_size": 6}}})
    assert a.config_version == b.config_version != c.config_version
    assert config_from_dict({"version": "2024-q1"}).config_version == "2024-q1"


def test_deploy_profiles_when_loaded_then_valid() -> None:
    for path in sorted(Path(__file__).resolve().parents[2].joinpath("deploy", "profiles").glob("*.yaml")):
        assert load_config(path).config_version
