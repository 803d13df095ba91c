"""Level 3, the symbol stage: targets, stops, re-entry veto, cadence, drift.

Targets come from sizing, the vol scale, the symbol caps and the signal-change rule. Per account:
each symbol's committed target, stop and veto (`stops.py`), the filled positions and the Kelly
ledger; partition-wide: who watches which symbol and Level 2's last marks. A signal goes on to
Level 4 with its target (or its denial) in the notes; a bar goes on with each watching account's
work (`stop`, `cadence`, `wait`). Its rules sit beside it: `stops.py`, `targets.py`; sizing is the
kernel's (`streams.core.kernel.sizing`); `snapshot.py` stores its state per account.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

from schemas.config import Config
from schemas.inputs import Bar
from streams.core import budget as bm
from streams.core.items import AccountView, Item, Level, Output, Result, account_keys, parse_part_key, part_key
from streams.core.kernel.sizing import size_notional
from streams.core.levels.symbol import stops as l3
from streams.core.levels.symbol.targets import capped_target
from streams.core.positions import Ledger, Position, apply_fill


@dataclass(slots=True)
class SymbolBook:
    """Level-3 state of one account: targets, stops and vetoes, filled positions, the ledger."""

    symbols: dict[str, l3.SymbolState] = field(default_factory=dict)
    filled: dict[str, Position] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=Ledger)
    seen_fills: dict[str, int] = field(default_factory=dict)  # fill id -> ts: the MAX_FILL_IDS newest fills
    seen_signals: dict[str, int] = field(default_factory=dict)  # signal id -> ts: the MAX_SIGNAL_IDS newest
    last_signal_ts: int | None = None
    fills_horizon: int | None = None  # the latest ts of a forgotten fill id: an unseen fill at or before it is refused
    view: AccountView | None = None
    drift_alarm: bool = False
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    # The seen ids by kind and chunk, in insertion order (built on first use, kept up to date as ids come,
    # dropped when ids are forgotten or loaded): storing a chunk reads its ids, not all 11,000 of a kind.
    id_index: dict[str, dict[int, dict[str, int]]] | None = field(default=None, compare=False, repr=False)

    def chunk_of_ids(self, kind: str, chunk: int) -> dict[str, int]:
        """The seen `kind` ids (id -> ts) in chunk `chunk`, in insertion order."""
        if self.id_index is None:
            index: dict[str, dict[int, dict[str, int]]] = {"fills": {}, "signals": {}}
            for name, ids in (("fills", self.seen_fills), ("signals", self.seen_signals)):
                for ident, ts in ids.items():
                    index[name].setdefault(id_chunk(ident), {})[ident] = ts
            self.id_index = index
        return self.id_index[kind].get(chunk, {})

    def remember(self, kind: str, ident: str, ts: int) -> None:
        """Add a seen id (`fills` or `signals`)."""
        (self.seen_fills if kind == "fills" else self.seen_signals)[ident] = ts
        if self.id_index is not None:
            self.id_index[kind].setdefault(id_chunk(ident), {})[ident] = ts


_GATED = ("HALTED", "SHUTDOWN", "REDUCING")

MAX_FILL_IDS = 10_000
"""Fill ids Level 3 keeps per account: those of its 10,000 newest fills (event time), plus a slack of 1,000.

A duplicate must be remembered to be dropped, and remembering every id grows with the tape (SPEC §8 asks
that a duplicate is never applied twice, not that every id is kept forever). When the oldest ids are
forgotten, an unseen fill at or before the newest of their times is refused as out of order (counted,
never applied: it may be a redelivery of one of them). The oldest go first, so one fill with a wild time
(a year 2199 typo) cannot make the account refuse the fills after it, as a window behind the newest fill
would.
"""
_FILL_ID_SLACK = 1_000  # forgotten in batches: one sort per 1,000 fills, not one scan per fill

MAX_SIGNAL_IDS = 10_000

ID_CHUNKS = 128
"""The seen ids of an account are stored in this many table keys (`seen_key`), each id in the chunk its
CRC-32 names: a new id rewrites one chunk (~1/128 of the set) instead of the whole book. Up to 11,000 ids
a kind in one value was ~0.4 MB written, and its undo part again, every time the account was touched."""


def id_chunk(ident: str) -> int:
    """The chunk an id is stored in: fixed by the id alone (CRC-32), the same on every worker and run."""
    return zlib.crc32(ident.encode()) % ID_CHUNKS


def seen_key(account: str, kind: str, chunk: int) -> str:
    """The table key of chunk `chunk` of an account's seen `kind` ids (`fills` or `signals`)."""
    return part_key(account, kind, str(chunk))


def parse_seen_key(key: str) -> tuple[str, str, int] | None:
    """(account, kind, chunk) of a `seen_key`, or None for any other key."""
    parsed = parse_part_key(key)
    if parsed is None or parsed[1] not in ("fills", "signals") or not parsed[2].isdigit():
        return None
    return parsed[0], parsed[1], int(parsed[2])


def seen_keys(account: str, kind: str) -> set[str]:
    """Every chunk key of an account's seen `kind` ids."""
    return {seen_key(account, kind, chunk) for chunk in range(ID_CHUNKS)}


SYMBOL_PART = "sym"

WATCHERS_KEY = "@|watchers"
"""The partition's watch list (who watches which symbol), apart from `@` (marks and closes, which every
bar changes): it changes only when an account first trades or signals a symbol. `|` is in no account
name (`schemas.base.Id`), so no account's key can be this one."""


def symbol_key(account: str, sym: str) -> str:
    """The table key of an account's Level-3 state of one symbol: its target, stop and veto, and its
    filled position (kept apart from the account's own key, so a signal, a fill or a bar rewrites one
    symbol, not the account's ~40)."""
    return part_key(account, SYMBOL_PART, sym)


def parse_symbol_key(key: str) -> tuple[str, str] | None:
    """(account, symbol) of a `symbol_key`, or None for any other key."""
    parsed = parse_part_key(key)
    return (parsed[0], parsed[2]) if parsed is not None and parsed[1] == SYMBOL_PART else None


"""Signal ids Level 3 keeps per account: those of its 10,000 newest signals, plus the same slack.

A reused id must be remembered to be refused: the decision id is a hash of the signal id, so a second
signal with the same id would publish a second decision under the first one's id. Signals before the
latest signal instant are refused as out of order anyway, so an id is forgotten only after 10,000 newer
signals of the account; reusing one after that is the producer's bug, and the guard cannot see it.
"""


class SymbolStage(Level):
    """Level 3: targets (sizing, vol scale, symbol cap, signal change), stops, re-entry veto, cadence, drift.

    It changes its state in place (why: `streams.core.items.Stage`); the pure decisions live in
    `stops.check_stops`, `targets.capped_target`, `sizing.size_notional`.
    """

    name = "symbol"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.books: dict[str, SymbolBook] = {}
        self.watchers: dict[str, set[str]] = {}
        self.closes: dict[str, float] = {}
        self.marks: dict[str, tuple[float, float | None]] = {}  # last close and ATR of every symbol (Level 2's)
        self._watchers_changed = False  # since `touched` last asked
        # chunk keys of seen ids changed since `touched` last asked (bounded: accounts x 2 x ID_CHUNKS)
        self.ids_changed: set[str] = set()
        # symbol keys (`symbol_key`) changed since `touched` last asked (bounded: accounts x symbols)
        self.symbols_changed: set[str] = set()
        self._order: dict[str, tuple[set[str], tuple[str, ...]]] = {}  # watchers, sorted: a bar visits them in order
        self._budget_on = config.budget.enabled
        self._cadence_on = config.policy.rebalance_triggers.on_cadence_tick

    def book(self, account: str) -> SymbolBook:
        book = self.books.get(account)
        if book is None:
            book = SymbolBook()
            self.books[account] = book
        return book

    def process(self, item: Item) -> Result:
        if item.kind == "bar":
            return self._bar(item)
        account = item.account
        if account is None:
            return [], [item]
        book = self.book(account)
        if "account" in item.notes:
            book.view = AccountView.from_json(item.notes["account"])
        items = [item]
        if item.kind == "fill":
            items = self._fill(item, book)[1]
        elif item.kind == "signal":
            items = self._signal(item, book)[1]
        if not items:
            carried = _carry(item)  # a dropped duplicate must not swallow a flatten or a run decided upstream
            if carried is None:
                return [], []
            item, items = carried, [carried]
        outputs = self._drift(item, book) if self.config.budget.enabled and item.event is not None else []
        run = item.notes.get("rebalance")
        if run is not None and not run.get("preview", False):
            for sym, state in book.symbols.items():
                l3.clear_veto(state)  # every rebalance run clears re-entry vetoes (SPEC §6.6)
                self.symbols_changed.add(symbol_key(account, sym))
        return outputs, items

    def touched(self, item: Item, forwarded: list[Item]) -> set[str]:
        """The keys `process(item)` may have changed: the account (not for a bar: it changes only the
        symbol of each watcher), the symbols and id chunks it changed, `@` when a bar came and
        `WATCHERS_KEY` when the watch list grew."""
        keys = account_keys(item, forwarded, partition=item.kind == "bar")
        if self._watchers_changed:
            keys.add(WATCHERS_KEY)
            self._watchers_changed = False
        if self.ids_changed:
            keys |= self.ids_changed
            self.ids_changed = set()
        if self.symbols_changed:
            keys |= self.symbols_changed
            self.symbols_changed = set()
        return keys

    def _drift(self, item: Item, book: SymbolBook) -> list[Output]:
        """The drift trigger: filled positions at the last closes against the rebalance targets."""
        view = book.view
        if view is None or view.equity is None or item.account is None:
            return []
        values = {sym: p.qty * self.closes.get(sym, p.avg_entry) for sym, p in sorted(book.filled.items())}
        policy = self.config.rebalance
        found = bm.max_drift(values, view.equity, policy.targets, policy.max_position_weight)
        threshold = self.config.budget.rebalancing_triggers.drift_threshold
        active = found is not None and found[0] > threshold
        fired: list[tuple[str, dict[str, Any]]] = []
        if found is not None and active and not book.drift_alarm:
            recommended = {"action": "rebalance", "symbol": found[1]}
            fired.append((bm.DRIFT, {"observed": found[0], "threshold": threshold, "recommended": recommended}))
        book.drift_alarm = active
        ts = item.ts
        return bm.recommend(
            self.config, item.account, ts, fired, item.notes, view.equity, view.regime, book.recommendations
        )

    def _watch(self, account: str, symbol: str) -> None:
        watching = self.watchers.setdefault(symbol, set())
        if account not in watching:
            watching.add(account)
            self._watchers_changed = True  # reported touched once (`WATCHERS_KEY`)

    def _fill(self, item: Item, book: SymbolBook) -> Result:
        fill = item.fill
        if fill.fill_id in book.seen_fills:
            self.stats["duplicates"] += 1
            return [], []
        if book.fills_horizon is not None and fill.ts <= book.fills_horizon:
            self.stats["out_of_order"] += 1  # as old as ids already forgotten: it may be a duplicate, never apply it
            return [], []
        book.remember("fills", fill.fill_id, fill.ts)
        self.ids_changed.add(seen_key(fill.account, "fills", id_chunk(fill.fill_id)))
        if len(book.seen_fills) > MAX_FILL_IDS + _FILL_ID_SLACK:
            _forget_oldest_fills(book)
            book.id_index = None
            self.ids_changed |= seen_keys(fill.account, "fills")
        position = book.filled.get(fill.symbol)
        if position is None:
            position = Position()
            book.filled[fill.symbol] = position
        apply_fill(position, book.ledger, fill.signed_qty, fill.price, fill.fee, None)
        self.symbols_changed.add(symbol_key(fill.account, fill.symbol))
        self._watch(fill.account, fill.symbol)
        return [], [item]

    def _signal(self, item: Item, book: SymbolBook) -> Result:
        sig = item.signal
        if sig.signal_id in book.seen_signals:
            self.stats["duplicates"] += 1
            return [], []
        if book.last_signal_ts is not None and sig.ts < book.last_signal_ts:
            self.stats["out_of_order"] += 1
            return [], []
        book.remember("signals", sig.signal_id, sig.ts)
        self.ids_changed.add(seen_key(sig.account, "signals", id_chunk(sig.signal_id)))
        if len(book.seen_signals) > MAX_SIGNAL_IDS + _FILL_ID_SLACK:
            book.seen_signals = _newest(book.seen_signals, MAX_SIGNAL_IDS)[0]
            book.id_index = None
            self.ids_changed |= seen_keys(sig.account, "signals")
        book.last_signal_ts = sig.ts
        state = book.symbols.get(sig.symbol)
        if state is None:
            state = l3.SymbolState()
            book.symbols[sig.symbol] = state
        self.symbols_changed.add(symbol_key(sig.account, sig.symbol))
        self._watch(sig.account, sig.symbol)
        mark = self.marks.get(sig.symbol)
        price = sig.price if sig.price is not None else (mark[0] if mark is not None else None)
        view = book.view
        equity = view.equity if view is not None else None
        if price is None or equity is None:
            item.notes["deny"] = ["per_symbol", "no_price"] if price is None else ["account", "equity_unknown"]
            item.notes["price"] = price or 0.0
            return [], [item]
        assert view is not None  # noqa: S101 - equity came from the view
        rules = self.rules(sig.account)
        if sig.target_notional is not None:
            raw = sig.target_notional
        elif sig.target_weight is not None:
            raw = sig.target_weight * equity
        else:
            atr = sig.atr if sig.atr is not None else (mark[1] if mark is not None else None)
            assert sig.direction is not None  # noqa: S101 - schema guarantees one target
            raw, method = size_notional(sig.direction.value, equity, price, atr, rules.sizing, book.ledger)
            item.notes["sizing"] = {"sizing_method": method, "atr": atr}
        target = raw * view.vol_scale
        item.notes.update({"price": price, "target": target, "committed": state.committed, "vetoed": state.vetoed})
        state.last_eval = sig.ts
        capped = capped_target(target, rules, equity, sig.symbol)
        threshold = self.config.policy.rebalance_triggers.signal_change_threshold
        committed = state.committed
        unchanged = (
            self.config.policy.rebalance_triggers.on_signal_change
            and committed is not None
            and abs(capped - committed) <= threshold * abs(committed)
        )
        # While vetoed or gated, only a smaller target may become the plan: a denied increase must not
        # come back through cadence once the account or symbol is free again.
        smaller = capped == 0 or (committed is not None and capped * committed > 0 and abs(capped) <= abs(committed))
        if not unchanged and (smaller or not (state.vetoed or view.trading_state in _GATED)):
            state.committed = capped
        return [], [item]

    def _bar(self, item: Item) -> Result:
        bar: Bar = item.event  # type: ignore[assignment]  # a `bar` item carries a Bar (`items.item_for`)
        symbol = bar.symbol
        self.marks[symbol] = (bar.close, item.notes.get("atr"))
        watching = self.watchers.get(symbol)
        if watching is None:
            return [], [item]
        if self._budget_on:
            self.closes[symbol] = bar.close
        cached = self._order.get(symbol)
        if cached is not None and cached[0] is watching and len(cached[1]) == len(watching):
            order = cached[1]  # a watch set only grows: the same set at the same size has the same members
        else:
            order = tuple(sorted(watching))
            self._order[symbol] = (watching, order)
        work: dict[str, dict[str, Any]] = {}
        for account in order:
            note = self._bar_for(account, bar)
            if note:
                work[account] = note
        if work:
            item.notes["accounts"] = work
        return [], [item]

    def _bar_for(self, account: str, bar: Bar) -> dict[str, Any]:
        book = self.books[account]
        sym = bar.symbol
        position = book.filled.get(sym)
        state = book.symbols.get(sym)
        if position is None and state is None:
            return {}  # nothing of this symbol to check or tick for the account
        # The symbol's key is reported changed only when this bar changed it (most bars of a held symbol
        # move no extreme and find no cadence due: nothing to store).
        key = symbol_key(account, sym)
        rules = self.rules(account)
        if position is not None and position.qty != 0:  # a flat position has no stops and no extremes to move
            extremes = (position.peak, position.trough)
            levels = rules.stops.for_symbol(sym)
            if l3.has_stops(levels):
                hit = l3.check_stops(position, bar.open, bar.high, bar.low, levels)
                l3.mark_extremes(position, bar.high, bar.low)
                if hit is not None:
                    if state is None:
                        state = l3.SymbolState()
                        book.symbols[sym] = state
                    l3.stop_out(state, rules.stops)
                    state.last_eval = bar.ts
                    self.stats[hit.origin] += 1
                    self.symbols_changed.add(key)
                    return {"stop": [hit.origin, hit.price]}
            else:
                l3.mark_extremes(position, bar.high, bar.low)
            if (position.peak, position.trough) != extremes:
                self.symbols_changed.add(key)
        if state is None:
            return {}
        if state.vetoed:
            l3.tick_cooldown(state, rules.stops)
            self.symbols_changed.add(key)
            return {}
        if state.committed is None or not self._cadence_on:
            return {}
        due = state.last_eval is None or bar.ts - state.last_eval >= rules.per_symbol.rebalance_cadence
        if not due:
            return {"wait": state.committed}
        state.last_eval = bar.ts
        self.symbols_changed.add(key)
        return {"cadence": state.committed}


def _newest(ids: dict[str, int], keep: int) -> tuple[dict[str, int], int]:
    """The `keep` newest ids (by ts, then id: independent of insertion order) and the ts of the newest forgotten."""
    ordered = sorted(ids.items(), key=lambda entry: (entry[1], entry[0]))
    drop = len(ordered) - keep
    return dict(ordered[drop:]), ordered[drop - 1][1]


def _forget_oldest_fills(book: SymbolBook) -> None:
    """Keep the MAX_FILL_IDS newest fill ids; the horizon moves to the newest one forgotten."""
    book.seen_fills, forgotten = _newest(book.seen_fills, MAX_FILL_IDS)
    book.fills_horizon = forgotten if book.fills_horizon is None else max(book.fills_horizon, forgotten)


def _carry(item: Item) -> Item | None:
    """What of a dropped item later levels still need: its flatten and run notes, as an account item."""
    kept: dict[str, Any] = {key: item.notes[key] for key in ("account", "flatten", "rebalance") if key in item.notes}
    if "flatten" not in kept and "rebalance" not in kept:
        return None
    return Item("account", item.account, None, kept)
