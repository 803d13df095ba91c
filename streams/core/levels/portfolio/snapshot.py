"""Level 4's snapshot: one per account (positions, quota, view, last run) and the partition's marks."""

from __future__ import annotations

from typing import Any

from streams.core.items import PARTITION_KEY, dump_view, load_view
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
    if keys is None or PARTITION_KEY in keys:  # else marks and clusters did not change (`PortfolioStage.touched`)
        out[PARTITION_KEY] = {"closes": m.closes, "atr": m.atr, "clusters": m.clusters}
        if m.sigma or m.beta:  # Level 2's figures, sent only when a rule needs them
            out[PARTITION_KEY].update(sigma=m.sigma, beta=m.beta)
        if m.day_closes:  # kept only with the rebalance's today_bias
            out[PARTITION_KEY]["day_closes"] = m.day_closes
    return out


def load_portfolio(stage: PortfolioStage, key: str, data: Snapshot) -> None:
    if key == PARTITION_KEY:
        stage.market.closes = dict(data["closes"])
        stage.market.atr = dict(data["atr"])
        stage.market.clusters = dict(data["clusters"])
        stage.market.sigma = dict(data.get("sigma", {}))
        stage.market.beta = dict(data.get("beta", {}))
        stage.market.day_closes = {s: list(v) for s, v in data.get("day_closes", {}).items()}
        return
    stage.books[key] = PortfolioBook(
        positions={s: load_position(p) for s, p in data["positions"].items()},
        quota_used=data["quota_used"],
        quota_day=data["quota_day"],
        view=load_view(data["view"]),
        last_run=data.get("last_run"),
    )
