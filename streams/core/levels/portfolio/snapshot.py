"""Level 4's snapshot: one per account (positions, quota, view, last run) and the partition's marks."""

from __future__ import annotations

from typing import Any

from streams.core.items import PARTITION_KEY, dump_view, load_view, parse_part_key
from streams.core.levels.portfolio.stage import PortfolioBook, PortfolioStage, position_key
from streams.core.positions import dump_position, load_position

Snapshot = dict[str, Any]


def dump_portfolio(stage: PortfolioStage, keys: Any = None) -> dict[str, Snapshot]:
    """Level 4: one snapshot per account, one per position, and the partition's marks and cluster map.

    Positions have keys of their own (`position_key`), written when the position changed
    (`PortfolioStage.positions_changed`): a decision rewrites its symbol's position, not every position
    of the account with their pending decisions.
    """
    wanted = stage.books if keys is None else [k for k in keys if k in stage.books]
    out: dict[str, Snapshot] = {}
    if keys is None:
        for account, book in stage.books.items():
            for sym, position in book.positions.items():
                out[position_key(account, sym)] = dump_position(position)
    else:
        for key in keys:
            parsed = parse_part_key(key)
            if parsed is not None and parsed[1] == "pos":
                held = stage.books[parsed[0]].positions.get(parsed[2]) if parsed[0] in stage.books else None
                if held is not None:
                    out[key] = dump_position(held)
    for account in wanted:
        book = stage.books[account]
        out[account] = {
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
    parsed = parse_part_key(key)
    if parsed is not None:
        if parsed[1] == "pos":
            book = stage.book(parsed[0])
            book.positions[parsed[2]] = load_position(data)
            book.sums = None  # derived from the positions: rebuilt at the next read
        return
    if key == PARTITION_KEY:
        stage.market.closes = dict(data["closes"])
        stage.market.atr = dict(data["atr"])
        stage.market.clusters = dict(data["clusters"])
        stage.market.sigma = dict(data.get("sigma", {}))
        stage.market.beta = dict(data.get("beta", {}))
        stage.market.day_closes = {s: list(v) for s, v in data.get("day_closes", {}).items()}
        return
    # Positions loaded before the account's own key are kept. A snapshot from before the position keys
    # holds them inline: they are taken, and reported changed, so the next write stores them apart.
    positions = stage.books[key].positions if key in stage.books else {}
    for sym, position in data.get("positions", {}).items():
        if sym not in positions:  # a position key is newer than the inline copy in any order of loading
            positions[sym] = load_position(position)
        stage.positions_changed.add(position_key(key, sym))
    stage.books[key] = PortfolioBook(
        positions=positions,
        quota_used=data["quota_used"],
        quota_day=data["quota_day"],
        view=load_view(data["view"]),
        last_run=data.get("last_run"),
    )
