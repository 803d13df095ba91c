"""Level 4's snapshot: one per account (positions, quota, view, last run), the cluster map under `@`, and
each symbol's close and ATR under `$<symbol>`."""

from __future__ import annotations

from typing import Any

from streams.core.items import PARTITION_KEY, SYMBOL_KEY, dump_view, load_view, symbol_key, symbols_in
from streams.core.levels.portfolio.stage import PortfolioBook, PortfolioStage
from streams.core.positions import dump_position, load_position

Snapshot = dict[str, Any]


def dump_portfolio(stage: PortfolioStage, keys: Any = None) -> dict[str, Snapshot]:
    """Level 4: one snapshot per account and the partition's marks and cluster map."""
    wanted = stage.books if keys is None else [k for k in keys if k in stage.books]
    out: dict[str, Snapshot] = {}
    for account in wanted:
        book = stage.books[account]
        out[account] = {
            "positions": {s: dump_position(p) for s, p in book.positions.items()},
            "quota_used": book.quota_used,
            "quota_day": book.quota_day,
            "view": dump_view(book.view),
            "last_run": book.last_run,
        }
    m = stage.market
    if keys is None or PARTITION_KEY in keys:
        out[PARTITION_KEY] = {"clusters": m.clusters}
    known = set(m.closes) | set(m.atr)
    for symbol in sorted(known if keys is None else known.intersection(symbols_in(keys))):
        entry: Snapshot = {}
        if symbol in m.closes:
            entry["close"] = m.closes[symbol]
        if symbol in m.atr:
            entry["atr"] = m.atr[symbol]
        out[symbol_key(symbol)] = entry
    return out


def load_portfolio(stage: PortfolioStage, key: str, data: Snapshot) -> None:
    if key.startswith(SYMBOL_KEY):
        if "close" in data:
            stage.market.closes[key[1:]] = data["close"]
        if "atr" in data:
            stage.market.atr[key[1:]] = data["atr"]
        return
    if key == PARTITION_KEY:  # closes and ATRs here were written before symbols had keys of their own
        stage.market.closes = {**data.get("closes", {}), **stage.market.closes}
        stage.market.atr = {**data.get("atr", {}), **stage.market.atr}
        stage.market.clusters = dict(data["clusters"])
        return
    stage.books[key] = PortfolioBook(
        positions={s: load_position(p) for s, p in data["positions"].items()},
        quota_used=data["quota_used"],
        quota_day=data["quota_day"],
        view=load_view(data["view"]),
        last_run=data.get("last_run"),
    )
