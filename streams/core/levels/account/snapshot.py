"""Level 1's snapshot: one per account (guard, budget, next run) and the partition's clocks under `@`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from schemas.outputs import TradingState
from streams.core import budget as bm
from streams.core.items import PARTITION_KEY
from streams.core.levels.account import rules as l1
from streams.core.levels.account.stage import AccountStage

Snapshot = dict[str, Any]


def dump_account(stage: AccountStage, keys: Any = None) -> dict[str, Snapshot]:
    """Level 1: one snapshot per account (guard, budget, next run) and the partition's clocks and regime."""
    wanted = stage.accounts if keys is None else [k for k in keys if k in stage.accounts]
    out: dict[str, Snapshot] = {}
    for account in wanted:
        budget = stage.budgets.get(account)
        out[account] = {
            **asdict(stage.accounts[account]),
            "budget": asdict(budget) if budget is not None else None,
            "next_rebalance_at": stage.rebalance_at.get(account),
        }
    out[PARTITION_KEY] = {
        "next_roll": stage.next_roll,
        "clock": stage.clock,
        "nonces": sorted(stage.gate.nonces),
        "next_rebalance": stage.next_rebalance,
        "market_regime": stage.market_regime,
        "pinned_all": stage.pinned_all,
        "bar_ts": dict(sorted(stage.bar_ts.items())),
    }
    return out


def load_account(stage: AccountStage, key: str, data: Snapshot) -> None:
    if key == PARTITION_KEY:
        stage.next_roll = data["next_roll"]
        stage.clock = data.get("clock", 0)
        stage.gate.nonces = set(data.get("nonces", ()))
        stage.next_rebalance = data.get("next_rebalance")
        stage.market_regime = data.get("market_regime")
        stage.bar_ts = dict(data.get("bar_ts", {}))
        stage.pinned_all = data.get("pinned_all")
        return
    fields = dict(data)
    fields.pop("quota_used", None)  # written before the entry quota lived only at Level 4
    budget = fields.pop("budget", None)
    next_rebalance_at = fields.pop("next_rebalance_at", None)
    fields["trading_state"] = TradingState(fields.get("trading_state", TradingState.ACTIVE))
    stage.accounts[key] = l1.AccountState(**fields)
    if budget is not None:
        stage.budgets[key] = bm.AccountBudget(**budget)
    if next_rebalance_at is not None:
        stage.rebalance_at[key] = next_rebalance_at
