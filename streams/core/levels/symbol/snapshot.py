"""Level 3's snapshot: per account its own key (ledger, view, alarms), one key per symbol (target, stop,
veto, filled position), chunks of seen ids; and the partition's watch list and marks."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from streams.core.items import PARTITION_KEY, dump_view, load_view
from streams.core.levels.symbol import stops as l3
from streams.core.levels.symbol.stage import (
    WATCHERS_KEY,
    SymbolBook,
    SymbolStage,
    id_chunk,
    parse_seen_key,
    parse_symbol_key,
    seen_key,
    seen_keys,
    symbol_key,
)
from streams.core.positions import Ledger, dump_position, load_position

Snapshot = dict[str, Any]

# Both are flat (every field a scalar): a mapping of the fields in declaration order is what `asdict`
# gives, without its recursive deep copy, which was most of the cost of storing an account's book.
_STATE_FIELDS = tuple(f.name for f in fields(l3.SymbolState))
_LEDGER_FIELDS = tuple(f.name for f in fields(Ledger))


def dump_symbol(stage: SymbolStage, keys: Any = None) -> dict[str, Snapshot]:
    """Level 3: one snapshot per account, one per symbol of it, its seen ids in chunks, and the
    partition's watch list.

    A symbol's target, stop, veto and filled position are under `symbol_key` (written when that symbol
    changed: `SymbolStage.symbols_changed`), not in the account's snapshot: a bar ticks one symbol of
    each watcher, and rewriting the account's ~40 symbols for it was most of what Level 3 wrote.
    The seen ids (up to 11,000 of each kind per account) are in `ID_CHUNKS` keys per kind (`seen_key`),
    written only when an id of theirs came or went (`SymbolStage.ids_changed`): with `keys`, a named
    chunk is dumped even when empty, so that a chunk emptied by forgetting is overwritten; without, only
    the chunks that hold ids.
    """
    wanted = stage.books if keys is None else [k for k in keys if k in stage.books]
    out: dict[str, Snapshot] = {}
    for account in wanted:
        book = stage.books[account]
        out[account] = {
            "ledger": {name: getattr(book.ledger, name) for name in _LEDGER_FIELDS},
            "last_signal_ts": book.last_signal_ts,
            "fills_horizon": book.fills_horizon,
            "view": dump_view(book.view),
            "drift_alarm": book.drift_alarm,
            "recommendations": book.recommendations,
        }
    out.update(_dump_symbols(stage, keys))
    out.update(_dump_seen(stage, keys))
    if keys is None or WATCHERS_KEY in keys:  # else the watch list did not change (`SymbolStage.touched`)
        out[WATCHERS_KEY] = {"watchers": {s: sorted(a) for s, a in sorted(stage.watchers.items())}}
    if keys is None or PARTITION_KEY in keys:  # else no bar came: marks and closes did not change
        out[PARTITION_KEY] = {
            "closes": dict(sorted(stage.closes.items())),
            "marks": {s: list(mark) for s, mark in sorted(stage.marks.items())},
        }
    return out


def _dump_symbols(stage: SymbolStage, keys: Any) -> dict[str, Snapshot]:
    """The symbol keys: the named ones (`keys`), or every symbol an account has state or a position in."""
    if keys is None:
        wanted = [(a, s) for a, book in stage.books.items() for s in sorted(book.symbols.keys() | book.filled.keys())]
    else:
        wanted = [parsed for key in keys if (parsed := parse_symbol_key(key)) is not None and parsed[0] in stage.books]
    out: dict[str, Snapshot] = {}
    for account, sym in wanted:
        book = stage.books[account]
        state = book.symbols.get(sym)
        position = book.filled.get(sym)
        out[symbol_key(account, sym)] = {
            "state": {name: getattr(state, name) for name in _STATE_FIELDS} if state is not None else None,
            "filled": dump_position(position) if position is not None else None,
        }
    return out


def _dump_seen(stage: SymbolStage, keys: Any) -> dict[str, Snapshot]:
    """The chunks of seen ids: the named ones (`keys`), or every chunk that holds an id (`keys` None)."""
    wanted: dict[tuple[str, str], set[int]] = {}
    if keys is None:
        for account, book in stage.books.items():
            for kind, ids in (("fills", book.seen_fills), ("signals", book.seen_signals)):
                wanted[(account, kind)] = {id_chunk(ident) for ident in ids}
    else:
        for key in keys:
            parsed = parse_seen_key(key)
            if parsed is not None and parsed[0] in stage.books:
                wanted.setdefault(parsed[:2], set()).add(parsed[2])
    out: dict[str, Snapshot] = {}
    for (account, kind), chunks in wanted.items():
        book = stage.books[account]
        for chunk in chunks:
            out[seen_key(account, kind, chunk)] = dict(book.chunk_of_ids(kind, chunk))
    return out


def load_symbol(stage: SymbolStage, key: str, data: Snapshot) -> None:
    parsed = parse_seen_key(key)
    if parsed is not None:
        book = stage.books.setdefault(parsed[0], SymbolBook())
        (book.seen_fills if parsed[1] == "fills" else book.seen_signals).update(_seen_ids(data))
        book.id_index = None
        return
    of_symbol = parse_symbol_key(key)
    if of_symbol is not None:
        book = stage.books.setdefault(of_symbol[0], SymbolBook())
        sym = of_symbol[1]
        if data.get("state") is not None:
            book.symbols[sym] = l3.SymbolState(**data["state"])
        if data.get("filled") is not None:
            book.filled[sym] = load_position(data["filled"])
        return
    if key == WATCHERS_KEY:
        stage.watchers = _watchers(data)
        return
    if key == PARTITION_KEY:
        if "watchers" in data:  # written before the watch list had its own key: taken, and stored there next
            stage.watchers = _watchers(data) | stage.watchers
            stage._watchers_changed = True
        stage.closes = dict(data.get("closes", {}))
        stage.marks = {s: (close, atr) for s, (close, atr) in data.get("marks", {}).items()}
        return
    # Chunks and symbols loaded before the account's own key are kept. A snapshot from before the chunks
    # holds the ids inline, and one from before the symbol keys its symbols and positions: they are
    # taken, and reported changed, so the next write stores them under their own keys.
    earlier = stage.books.get(key)
    seen_fills = earlier.seen_fills if earlier is not None else {}
    seen_signals = earlier.seen_signals if earlier is not None else {}
    for kind, ids in (("fills", seen_fills), ("signals", seen_signals)):
        inline = data.get(f"seen_{kind}")
        if inline is not None:
            ids.update(_seen_ids(inline))
            stage.ids_changed |= seen_keys(key, kind)
    symbols = earlier.symbols if earlier is not None else {}
    filled = earlier.filled if earlier is not None else {}
    for sym, state in data.get("symbols", {}).items():
        symbols.setdefault(sym, l3.SymbolState(**state))
        stage.symbols_changed.add(symbol_key(key, sym))
    for sym, position in data.get("filled", {}).items():
        filled.setdefault(sym, load_position(position))
        stage.symbols_changed.add(symbol_key(key, sym))
    if "symbols" in data or "filled" in data:
        stage.symbols_changed.add(key)  # the account's own value is written again without them
    stage.books[key] = SymbolBook(
        symbols=symbols,
        filled=filled,
        ledger=Ledger(**data["ledger"]),
        seen_fills=seen_fills,
        seen_signals=seen_signals,
        last_signal_ts=data["last_signal_ts"],
        fills_horizon=data.get("fills_horizon"),
        view=load_view(data["view"]),
        drift_alarm=bool(data.get("drift_alarm", False)),
        recommendations=list(data.get("recommendations", ())),
    )


def _watchers(data: Snapshot) -> dict[str, set[str]]:
    """The watch list of a `WATCHERS_KEY` value (or of an `@` written before it had its own key)."""
    return {s: set(a) for s, a in data["watchers"].items()}


def _seen_ids(data: Any) -> dict[str, int]:
    """Id -> ts; a snapshot from before the bound holds a list of ids, whose times it did not keep."""
    if isinstance(data, list):
        return {str(fid): -1 for fid in data}  # time unknown: kept, and the first forgotten (the horizon stays)
    return {str(fid): int(ts) for fid, ts in data.items()}
