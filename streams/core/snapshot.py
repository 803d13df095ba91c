"""JSON snapshots of each level's state, key by key, for the Faust tables and for state digests.

Keys: an account id for per-account state; `@` for the partition-wide state of a level; and at
Level 2 `@clusters`, the cluster window, as JSON bytes already serialised. A stage restored from its
snapshots continues exactly as if it had never stopped (tested).

Why `@clusters` is apart and pre-serialised: the window (30 rows of returns per symbol, ~370 kB of JSON
for 500 symbols) changes once per bar timestamp while the worker stores Level 2 after every batch. The
same `bytes` object comes back until the window changes, and the worker skips a key whose bytes equal
the stored value, so an unchanged window costs neither a serialisation nor a write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import orjson

from streams.core import account as l1
from streams.core import budget as bm
from streams.core import symbol as l3
from streams.core.clusters import ClusterState
from streams.core.market import SymbolMarket
from streams.core.positions import Ledger, Pending, Position
from streams.core.stages import (
    PARTITION_KEY,
    AccountStage,
    AccountView,
    MarketStage,
    PortfolioBook,
    PortfolioStage,
    SymbolBook,
    SymbolStage,
)

CLUSTERS_KEY = "@clusters"
Snapshot = dict[str, Any]


def _position(p: Position) -> Snapshot:
    return {
        "qty": p.qty,
        "avg_entry": p.avg_entry,
        "peak": p.peak,
        "trough": p.trough,
        "trip_pnl": p.trip_pnl,
        "last_price": p.last_price,
        "pending": {k: [v.qty, v.expires_at] for k, v in p.pending.items()},
    }


def _load_position(data: Snapshot) -> Position:
    pending = {k: Pending(q, e) for k, (q, e) in data["pending"].items()}
    return Position(
        data["qty"], data["avg_entry"], data["peak"], data["trough"], data["trip_pnl"], data["last_price"], pending
    )


def _view(view: AccountView | None) -> Snapshot | None:
    return view.to_json() if view is not None else None


def _load_view(data: Snapshot | None) -> AccountView | None:
    return AccountView.from_json(data) if data is not None else None


def dump_market(stage: MarketStage) -> dict[str, Snapshot | bytes]:
    """Level 2: the partition-wide snapshot, and the cluster window as cached JSON bytes."""
    st = stage.state
    return {
        PARTITION_KEY: {
            "cluster_pending": st.clusters.pending(),
            "symbols": {s: [m.last_ts, m.close, m.atr, m.tr_count, m.tr_sum] for s, m in st.symbols.items()},
            "published": st.published,
            "budget": {
                "closes": list(st.classifier.closes),
                "regime": st.classifier.regime,
                "correlation": st.correlation,
                "spike": st.spike,
            },
        },
        CLUSTERS_KEY: st.clusters.window_json(),
    }


def load_market(stage: MarketStage, key: str, data: Snapshot | bytes) -> None:
    """Restore one Level-2 key; `@` and `@clusters` may come in either order.

    Also reads the single-key format of earlier versions (the whole cluster state under `@`'s
    `clusters`), so tables written before the split restore to the same state.
    """
    st = stage.state
    if key == CLUSTERS_KEY:
        window = orjson.loads(data) if isinstance(data, bytes) else data
        # The pending bars came (or will come) with `@`: keep them across the rebuilt window.
        st.clusters = ClusterState.from_dict(st.clusters.params, {**window, **st.clusters.pending()})
        return
    snap: Snapshot = orjson.loads(data) if isinstance(data, bytes) else data
    if "clusters" in snap:
        st.clusters = ClusterState.from_dict(st.clusters.params, snap["clusters"])
    else:
        st.clusters.restore_pending(snap["cluster_pending"])
    st.symbols = {s: SymbolMarket(*values) for s, values in snap["symbols"].items()}
    st.published = dict(snap["published"])
    budget = snap.get("budget") or {}
    st.classifier = bm.ClassifierState(list(budget.get("closes", ())), budget.get("regime"))
    st.correlation = budget.get("correlation")
    st.spike = bool(budget.get("spike", False))


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
    budget = fields.pop("budget", None)
    next_rebalance_at = fields.pop("next_rebalance_at", None)
    stage.accounts[key] = l1.AccountState(**fields)
    if budget is not None:
        stage.budgets[key] = bm.AccountBudget(**budget)
    if next_rebalance_at is not None:
        stage.rebalance_at[key] = next_rebalance_at


def dump_symbol(stage: SymbolStage, keys: Any = None) -> dict[str, Snapshot]:
    """Level 3: one snapshot per account and the partition's watch list."""
    wanted = stage.books if keys is None else [k for k in keys if k in stage.books]
    out: dict[str, Snapshot] = {}
    for account in wanted:
        book = stage.books[account]
        out[account] = {
            "symbols": {s: asdict(v) for s, v in book.symbols.items()},
            "filled": {s: _position(p) for s, p in book.filled.items()},
            "ledger": asdict(book.ledger),
            "seen_fills": sorted(book.seen_fills),
            "seen_signals": sorted(book.seen_signals),
            "last_signal_ts": book.last_signal_ts,
            "view": _view(book.view),
            "drift_alarm": book.drift_alarm,
            "recommendations": book.recommendations,
        }
    out[PARTITION_KEY] = {
        "watchers": {s: sorted(a) for s, a in sorted(stage.watchers.items())},
        "closes": dict(sorted(stage.closes.items())),
        "marks": {s: list(mark) for s, mark in sorted(stage.marks.items())},
    }
    return out


def load_symbol(stage: SymbolStage, key: str, data: Snapshot) -> None:
    if key == PARTITION_KEY:
        stage.watchers = {s: set(a) for s, a in data["watchers"].items()}
        stage.closes = dict(data.get("closes", {}))
        stage.marks = {s: (close, atr) for s, (close, atr) in data.get("marks", {}).items()}
        return
    stage.books[key] = SymbolBook(
        symbols={s: l3.SymbolState(**v) for s, v in data["symbols"].items()},
        filled={s: _load_position(p) for s, p in data["filled"].items()},
        ledger=Ledger(**data["ledger"]),
        seen_fills=set(data["seen_fills"]),
        seen_signals=set(data["seen_signals"]),
        last_signal_ts=data["last_signal_ts"],
        view=_load_view(data["view"]),
        drift_alarm=bool(data.get("drift_alarm", False)),
        recommendations=list(data.get("recommendations", ())),
    )


def dump_portfolio(stage: PortfolioStage, keys: Any = None) -> dict[str, Snapshot]:
    """Level 4: one snapshot per account and the partition's marks and cluster map."""
    wanted = stage.books if keys is None else [k for k in keys if k in stage.books]
    out: dict[str, Snapshot] = {}
    for account in wanted:
        book = stage.books[account]
        out[account] = {
            "positions": {s: _position(p) for s, p in book.positions.items()},
            "quota_used": book.quota_used,
            "quota_day": book.quota_day,
            "view": _view(book.view),
            "last_run": book.last_run,
        }
    m = stage.market
    out[PARTITION_KEY] = {"closes": m.closes, "atr": m.atr, "clusters": m.clusters}
    return out


def load_portfolio(stage: PortfolioStage, key: str, data: Snapshot) -> None:
    if key == PARTITION_KEY:
        stage.market.closes = dict(data["closes"])
        stage.market.atr = dict(data["atr"])
        stage.market.clusters = dict(data["clusters"])
        return
    stage.books[key] = PortfolioBook(
        positions={s: _load_position(p) for s, p in data["positions"].items()},
        quota_used=data["quota_used"],
        quota_day=data["quota_day"],
        view=_load_view(data["view"]),
        last_run=data.get("last_run"),
    )


DUMPERS: dict[str, Callable[..., dict[str, Any]]] = {
    "market": dump_market,
    "account": dump_account,
    "symbol": dump_symbol,
    "portfolio": dump_portfolio,
}
LOADERS: dict[str, Callable[[Any, str, Any], None]] = {
    "market": load_market,
    "account": load_account,
    "symbol": load_symbol,
    "portfolio": load_portfolio,
}
