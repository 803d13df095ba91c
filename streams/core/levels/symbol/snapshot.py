"""Level 3's snapshot: one per account (targets, stops, positions, ledger, seen ids) and the watch list."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from streams.core.items import PARTITION_KEY, dump_view, load_view
from streams.core.levels.symbol import stops as l3
from streams.core.levels.symbol.stage import SymbolBook, SymbolStage
from streams.core.positions import Ledger, dump_position, load_position

Snapshot = dict[str, Any]

# Both are flat (every field a scalar): a mapping of the fields in declaration order is what `asdict`
# gives, without its recursive deep copy, which was most of the cost of storing an account's book.
_STATE_FIELDS = tuple(f.name for f in fields(l3.SymbolState))
_LEDGER_FIELDS = tuple(f.name for f in fields(Ledger))


def dump_symbol(stage: SymbolStage, keys: Any = None) -> dict[str, Snapshot]:
    """Level 3: one snapshot per account and the partition's watch list."""
    wanted = stage.books if keys is None else [k for k in keys if k in stage.books]
    out: dict[str, Snapshot] = {}
    for account in wanted:
        book = stage.books[account]
        out[account] = {
            "symbols": {s: {name: getattr(v, name) for name in _STATE_FIELDS} for s, v in book.symbols.items()},
            "filled": {s: dump_position(p) for s, p in book.filled.items()},
            "ledger": {name: getattr(book.ledger, name) for name in _LEDGER_FIELDS},
            # in insertion order, not sorted: up to 10,000 ids each, dumped whenever the account is
            # touched (sorting was 3/4 of that cost); which ids are forgotten never depends on the order
            "seen_fills": dict(book.seen_fills),
            "seen_signals": dict(book.seen_signals),
            "last_signal_ts": book.last_signal_ts,
            "fills_horizon": book.fills_horizon,
            "view": dump_view(book.view),
            "drift_alarm": book.drift_alarm,
            "recommendations": book.recommendations,
        }
    if keys is not None and PARTITION_KEY not in keys:
        return out  # the watch list, marks and closes did not change (`SymbolStage.touched`)
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
        filled={s: load_position(p) for s, p in data["filled"].items()},
        ledger=Ledger(**data["ledger"]),
        seen_fills=_seen_ids(data["seen_fills"]),
        seen_signals=_seen_ids(data["seen_signals"]),
        last_signal_ts=data["last_signal_ts"],
        fills_horizon=data.get("fills_horizon"),
        view=load_view(data["view"]),
        drift_alarm=bool(data.get("drift_alarm", False)),
        recommendations=list(data.get("recommendations", ())),
    )


def _seen_ids(data: Any) -> dict[str, int]:
    """Id -> ts; a snapshot from before the bound holds a list of ids, whose times it did not keep."""
    if isinstance(data, list):
        return {str(fid): -1 for fid in data}  # time unknown: kept, and the first forgotten (the horizon stays)
    return {str(fid): int(ts) for fid, ts in data.items()}
