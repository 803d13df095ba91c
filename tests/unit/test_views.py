"""State and budget views (SPEC §9): pure functions of the level stages, for the web routes and the CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from schemas.inputs import Control
from streams.cli import app
from streams.core.engine import Engine
from streams.core.levels.account.controls import sign
from streams.core.snapshot import DUMPERS
from streams.testing import TapeBuilder, TapeResult
from streams.views import (
    VIEWS,
    account_state,
    budget,
    budget_recommendations,
    budget_utilization,
    find,
    rebalance_request,
)

KEY = b"k"
T0 = "2024-01-15T14:00:00Z"
LATER = "2024-01-15T15:00:00Z"
CONFIG: dict[str, Any] = {
    "risk": {
        "clusters": {"cap_pct": None},
        "concentration": {"position": [0.5, 0.6], "cluster": [0.5, 0.6]},
        "portfolio": {"gross_cap": 50_000},
    },
    "budget": {"enabled": True},
    "rebalance": {"targets": {"X": 0.1}, "min_trade_value": 100},
}


def _bear() -> TapeBuilder:
    """docs/budget.md: 100 X held at 100; bear (budget 20,000); the signal for 50,000 is clipped to BUY 100."""
    tape = TapeBuilder().equity("a", T0, 100_000).flat_bar("X", T0, 100.0)
    tape.fill("a", "X", "BUY", 100, 100.0, "2024-01-15T14:00:10Z", fill_id="f0")
    tape.control("SET_REGIME", "a", "2024-01-15T14:01:00Z", "n1", LATER, KEY, regime="bear")
    return tape.signal("a", "X", "2024-01-15T14:02:00Z", price=100.0, target_notional=50_000, signal_id="s1")


@pytest.fixture(scope="module")
def bear() -> TapeResult:
    return _bear().run(CONFIG, control_key=KEY)


def _levels(engine: Engine) -> dict[str, Any]:
    """What the Faust worker holds for one partition: level name -> stage."""
    return {"market": engine.market, "account": engine.account, "symbol": engine.symbol, "portfolio": engine.portfolio}


def test_budget_view_when_bear_pinned_then_allocation_cap_and_source(bear: TapeResult) -> None:
    view = budget(bear.engine, "a")

    assert view is not None
    assert (view["regime"], view["source"], view["pinned"]) == ("bear", "control", "bear")
    allocation = {"equity_allocation": 0.4, "leverage_limit": 0.5, "vol_target": 0.08, "max_abs_beta_pct": None}
    assert view["allocation"] == allocation
    assert (view["allocated_capital"], view["budget_gross_cap"]) == (40_000.0, 20_000.0)
    assert (view["static_gross_cap"], view["gross_cap_in_force"]) == (50_000.0, 20_000.0)


def test_utilization_view_when_clip_pending_then_budget_exactly_used(bear: TapeResult) -> None:
    view = budget_utilization(bear.engine, "a")

    assert view is not None
    # 100 filled + 100 pending (the CLIP) at 100 = 20,000 gross against the 20,000 budget.
    assert (view["gross"], view["budget_gross_cap"], view["utilization"], view["headroom"]) == (
        20_000.0,
        20_000.0,
        1.0,
        0.0,
    )
    assert view["allocation_used"] == 0.5  # of the 40,000 allocated capital
    assert view["positions"] == [
        {
            "symbol": "X",
            "qty": 100.0,
            "pending": 100.0,
            "price": 100.0,
            "value": 20_000.0,
            "weight": 0.2,
            "share_of_budget": 1.0,
        }
    ]
    assert view["drift"] == {"max": 0.0, "symbol": "X", "threshold": 0.1}  # filled 10 % against the 10 % target


def test_recommendations_view_when_regime_changed_then_listed_and_pending_until_a_run(bear: TapeResult) -> None:
    view = budget_recommendations(bear.engine, "a")
    tape = _bear().control("REBALANCE", "a", "2024-01-15T14:03:00Z", "r1", LATER, KEY)
    after = budget_recommendations(tape.run(CONFIG, control_key=KEY).engine, "a")

    assert view is not None and after is not None
    ((record,),) = [view["recommendations"]]
    assert (record["trigger"], record["regime"], record["ts"]) == ("regime_change", "bear", "2024-01-15T14:01:00.000Z")
    assert view["pending"] == view["recommendations"] and view["last_run"] is None
    assert after["pending"] == [] and after["last_run"]["trigger"] == "control"  # type: ignore[index]


def test_state_view_when_bear_then_trading_state_regime_and_exposure(bear: TapeResult) -> None:
    view = account_state(bear.engine, "a")

    assert view is not None
    assert (view["trading_state"], view["equity"], view["regime"]) == ("ACTIVE", 100_000.0, "bear")
    assert view["exposure"] == {"gross": 20_000.0, "net": 20_000.0}
    assert view["as_of"] == "2024-01-15T14:02:00.000Z" and view["figures"]["total_loss_pct"] == 0.0


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_views_when_called_with_worker_stage_mapping_then_same_as_with_engine(bear: TapeResult, name: str) -> None:
    assert VIEWS[name](_levels(bear.engine), "a") == VIEWS[name](bear.engine, "a")


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_views_when_account_unknown_then_none(bear: TapeResult, name: str) -> None:
    assert VIEWS[name](bear.engine, "nobody") is None


def test_views_when_pending_expired_then_not_counted_and_state_untouched() -> None:
    tape = _bear().equity("a", "2024-01-15T14:30:00Z", 100_000)  # 28 minutes later: the 5-minute pending is gone
    result = tape.run(CONFIG, control_key=KEY)
    digest = hashlib.sha256(orjson.dumps(DUMPERS["portfolio"](result.engine.portfolio))).hexdigest()

    view = budget_utilization(result.engine, "a")

    assert view is not None and view["gross"] == 10_000.0 and view["positions"][0]["pending"] == 0.0
    assert hashlib.sha256(orjson.dumps(DUMPERS["portfolio"](result.engine.portfolio))).hexdigest() == digest


def test_find_when_account_lives_in_the_second_partition_then_its_view() -> None:
    empty = Engine(TapeBuilder().run(CONFIG).engine.config)
    result = _bear().run(CONFIG, control_key=KEY)

    found = find(budget, [_levels(empty), _levels(result.engine)], "a")

    assert found is not None and found["regime"] == "bear"
    assert find(budget, [_levels(empty)], "a") is None


# ----------------------------------------------------------------- POST /rebalance/{id}


def _body(**overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "command": "REBALANCE",
        "account": "a",
        "ts": "2024-01-15T14:05:00Z",
        "issued_by": "ops",
        "nonce": "r9",
        "expires_at": LATER,
        "params": {"preview": True},
        **overrides,
    }
    value["signature"] = sign(value, KEY)
    return value


def test_rebalance_request_when_signed_for_the_account_then_control() -> None:
    control = rebalance_request(orjson.dumps(_body()), "a", KEY)

    assert isinstance(control, Control)
    assert (control.command.value, control.account, control.params) == ("REBALANCE", "a", {"preview": True})


@pytest.mark.parametrize(
    ("body", "account", "error"),
    [
        (b"{not json", "a", "not JSON"),
        (b"[1, 2]", "a", "must be a JSON object"),
        ({**_body(), "signature": None}, "a", "security: unsigned control"),
        ({**_body(), "nonce": "changed"}, "a", "security: forged control"),
        (_body(), "b", "the control is for account 'a', not 'b'"),
        (_body(command="HALT"), "a", "takes a REBALANCE control, got HALT"),
        (_body(params={"targets": {"X": -1}}), "a", "params.targets['X'] must be a finite weight >= 0"),
        ({"command": "REBALANCE"}, "a", "invalid control value"),
    ],
)
def test_rebalance_request_when_not_acceptable_then_error_says_why(body: Any, account: str, error: str) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)

    answer = rebalance_request(raw, account, KEY)

    assert isinstance(answer, str) and error in answer


def test_rebalance_request_when_signatures_not_required_then_unsigned_accepted() -> None:
    body = {k: v for k, v in _body().items() if k != "signature"}

    assert isinstance(rebalance_request(body, "a", None, required=False), Control)
    assert (
        rebalance_request(body, "a", None)
        == "security: no control key configured (RISKGUARD_CONTROL_KEY): controls are refused"
    )


# ----------------------------------------------------------------- riskguard state


def _files(tmp_path: Path) -> tuple[Path, Path]:
    tape, config = tmp_path / "in.jsonl", tmp_path / "c.yaml"
    tape.write_bytes(b"\n".join(_bear().to_bytes()) + b"\n")
    config.write_text(orjson.dumps(CONFIG).decode(), encoding="utf-8")  # JSON is YAML
    return tape, config


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_state_command_when_view_named_then_prints_that_view_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bear: TapeResult, name: str
) -> None:
    monkeypatch.setenv("RISKGUARD_CONTROL_KEY", KEY.decode())
    tape, config = _files(tmp_path)

    result = CliRunner().invoke(app, ["state", str(tape), "--config", str(config), "--account", "a", "--view", name])

    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout_bytes) == orjson.loads(orjson.dumps(VIEWS[name](bear.engine, "a")))


def test_state_command_when_account_unknown_then_exit_1_and_bad_view_exit_2(tmp_path: Path) -> None:
    tape, config = _files(tmp_path)
    runner = CliRunner()

    unknown = runner.invoke(app, ["state", str(tape), "--config", str(config), "--account", "zz"])
    bad_view = runner.invoke(app, ["state", str(tape), "--config", str(config), "--account", "a", "--view", "x"])

    assert unknown.exit_code == 1 and "unknown account" in unknown.output
    assert bad_view.exit_code == 2 and "unknown view" in bad_view.output
