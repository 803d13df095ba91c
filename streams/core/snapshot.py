"""JSON snapshots of each level's state, key by key, for the Faust tables and for state digests.

Keys: an account id for per-account state; `@` for the partition-wide state of a level; and at
Level 2 `@clusters`, the cluster window, as JSON bytes already serialised. A stage restored from its
snapshots continues exactly as if it had never stopped (tested).

Each level dumps and loads its own state in `streams.core.levels.<level>.snapshot`; this is only the
registry the worker and the tests look them up in, by level name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams.core.levels.account.snapshot import dump_account, load_account
from streams.core.levels.market.snapshot import dump_market, load_market
from streams.core.levels.portfolio.snapshot import dump_portfolio, load_portfolio
from streams.core.levels.symbol.snapshot import dump_symbol, load_symbol

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
