"""The operator page's data without a browser: the overview view, the held accounts, the recent outputs, the file."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from streams.testing import TapeBuilder, TapeResult
from streams.views import account_overview, held_accounts
from streams.worker.outputs import RecentOutputs

ROOT = Path(__file__).resolve().parents[2]
T0 = "2024-01-15T14:00:00Z"
CONFIG: dict[str, Any] = {"risk": {"portfolio": {"gross_cap": 50_000}}}


@pytest.fixture(scope="module")
def halted() -> TapeResult:
    """Account a loses 6% in a day (daily limit 5%): HALTED on daily_loss; b holds 100 X and is ACTIVE."""
    tape = TapeBuilder().equity("a", T0, 100_000).equity("b", T0, 50_000).flat_bar("X", T0, 10.0)
    tape.fill("b", "X", "BUY", 100, 10.0, "2024-01-15T14:00:10Z")
    return tape.equity("a", "2024-01-15T14:05:00Z", 94_000).run(CONFIG)


def by_name(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {limit["name"]: limit for limit in view["limits"]}


def test_overview_when_daily_loss_breached_then_halted_with_each_limit_used_and_its_floor(halted: TapeResult) -> None:
    view = account_overview(halted.engine, "a")

    assert view is not None
    assert [(h.state, h.reason) for h in halted.halts] == [("HALTED", "daily_loss")]
    assert (view["trading_state"], view["equity"], view["as_of"]) == ("HALTED", 94_000.0, "2024-01-15T14:05:00.000Z")
    limits = by_name(view)
    assert set(limits) == {"daily_loss", "intraday_drawdown", "total_loss"}
    assert limits["daily_loss"]["used"] == pytest.approx(1.2) and limits["daily_loss"]["floor"] == 95_000
    assert limits["intraday_drawdown"] == {
        "name": "intraday_drawdown",
        "value": pytest.approx(0.06),
        "warn": 0.05,
        "limit": 0.10,
        "used": pytest.approx(0.6),
        "floor": 90_000,
    }
    assert limits["total_loss"]["floor"] == 90_000


def test_overview_when_positions_held_then_budget_is_the_utilization_views(halted: TapeResult) -> None:
    view = account_overview(halted.engine, "b")

    assert view is not None and view["trading_state"] == "ACTIVE"
    assert view["budget"]["gross"] == 1_000.0
    assert all(limit["used"] == 0 for limit in view["limits"])


def test_overview_when_trailing_drawdown_configured_then_its_floor_locks_at_the_initial_balance() -> None:
    config = {"risk": {"account": {"trailing_drawdown": {"pct": 0.06}}}}
    result = TapeBuilder().equity("a", T0, 100_000).equity("a", "2024-01-15T14:01:00Z", 110_000).run(config)

    trailing = by_name(account_overview(result.engine, "a") or {})["trailing_drawdown"]

    assert trailing["floor"] == 100_000, "lock_at_initial: the floor never rises above the initial balance"
    assert trailing["value"] == 0.0 and trailing["limit"] == 0.06


def test_held_accounts_when_two_partitions_then_every_account_with_its_partition_sorted(halted: TapeResult) -> None:
    empty = TapeBuilder().equity("c", T0, 1_000).run(CONFIG)
    partitions = {3: {"account": halted.engine.account}, 1: {"account": empty.engine.account}}

    assert held_accounts(partitions) == [
        {"account": "c", "partition": 1},
        {"account": "a", "partition": 3},
        {"account": "b", "partition": 3},
    ]


def test_recent_outputs_when_more_than_depth_then_newest_first_per_account_and_only_decisions_and_halts() -> None:
    recent = RecentOutputs(depth=2)
    for n in range(3):
        recent.add("decisions", {"account": "a", "decision_id": f"d{n}"})
    recent.add("halts", {"account": "a", "halt_id": "h0"})
    recent.add("events", {"account": "a", "event_id": "e0"})
    recent.add("decisions", {"account": "b", "decision_id": "d9"})

    assert recent.of("a") == {
        "decisions": [{"account": "a", "decision_id": "d2"}, {"account": "a", "decision_id": "d1"}],
        "halts": [{"account": "a", "halt_id": "h0"}],
    }
    assert recent.of("nobody") == {"decisions": [], "halts": []}


def test_page_when_read_then_polls_only_routes_the_worker_serves_and_loads_nothing_external() -> None:
    page = resources.files("streams.worker").joinpath("operator.html").read_text(encoding="utf-8")
    web = (ROOT / "streams" / "worker" / "web.py").read_text(encoding="utf-8")
    served = {re.sub(r"\{\w+\}", "{}", route) for route in re.findall(r'@app\.page\("([^"]+)"\)', web)}

    polled = {re.sub(r"\$\{[^}]+\}", "{}", path) for path in re.findall(r"getJson\(\s*[`\"](/[^`\"]*)[`\"]", page)}

    assert polled == {"/accounts", "/accounts/{}/overview", "/accounts/{}/recent"}
    assert polled <= served and "/" in served
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page), "no external script, style or font"
    assert "RISKGUARD_CONTROL_KEY" in page and "sign(" in page, "the page shows how to sign a control"
    assert not re.search(r"(?i)(localStorage|prompt\()", page), "the page never asks for or keeps a key"
