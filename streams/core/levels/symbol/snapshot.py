"""Level 3's snapshot: one per account (targets, stops, positions, ledger, seen ids) and, per symbol under
`$<symbol>`, its watchers, last close and mark."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from streams.core.items import PARTITION_KEY, SYMBOL_KEY, dump_view, load_view, symbol_key, symbols_in
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
            "seen_fills": sorted(book.seen_fills),
            "seen_signals": sorted(book.seen_signals),
            "last_signal_ts": book.last_signal_ts,
            "view": dump_view(book.view),
            "drift_alarm": book.drift_alarm,
            "recommendations": book.recommendations,
        }
    if keys is None or PARTITION_KEY in keys:
        out[PARTITION_KEY] = {}
    every = (stage.watchers, stage.closes, stage.marks)
    known: set[str] = set().union(*every)
    for symbol in sorted(known if keys is None else known.intersection(symbols_in(keys))):
        entry: Snapshot = {}
        if symbol in stage.watchers:
            entry["watchers"] = sorted(stage.watchers[symbol])
        if symbol in stage.closes:
            entry["close"] = stage.closes[symbol]
        if symbol in stage.marks:
            entry["mark"] = list(stage.marks[symbol])
        out[symbol_key(symbol)] = entry
    return out


def load_symbol(stage: SymbolStage, key: str, data: Snapshot) -> None:
    if key.startswith(SYMBOL_KEY):
        symbol = key[1:]
        if "watchers" in data:
            stage.watchers[symbol] = set(data["watchers"])
        if "close" in data:
            stage.closes[symbol] = data["close"]
        if "mark" in data:
            close, atr = data["mark"]
            stage.marks[symbol] = (close, atr)
        return
    if key == PARTITION_KEY:  # the whole watch list here was written before symbols had keys of their own
        stage.watchers = {**{s: set(a) for s, a in data.get("watchers", {}).items()}, **stage.watchers}
        stage.closes = {**data.get("closes", {}), **stage.closes}
        stage.marks = {**{s: (close, atr) for s, (close, atr) in data.get("marks", {}).items()}, **stage.marks}
        return
    stage.books[key] = SymbolBook(
        symbols={s: l3.SymbolState(**v) for s, v in data["symbols"].items()},
        filled={s: load_position(p) for s, p in data["filled"].items()},
        ledger=Ledger(**data["ledger"]),
        seen_fills=set(data["seen_fills"]),
        seen_signals=set(data["seen_signals"]),
        last_signal_ts=data["last_signal_ts"],
        view=load_view(data["view"]),
        drift_alarm=bool(data.get("drift_alarm", False)),
        recommendations=list(data.get("recommendations", ())),
    )
