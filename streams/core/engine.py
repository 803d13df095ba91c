"""The guard engine: input events in order in, decisions / halts / events out (SPEC §6, §7).

The engine is the imperative core's conductor, not a level: it routes each event to the level
functions in seed 001's order — Level 1 `account`, Level 2 `clusters`, Level 3 `symbol`, the
decision kernel and Level 4 `portfolio` — and turns their results into output messages. It reads
no clock and does no I/O; `riskguard replay` and the Faust agents both call it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from schemas.base import InputModel, OutputModel
from schemas.config import Config, RiskConfig
from schemas.inputs import Bar, Control, Equity, Fill, Signal
from schemas.outputs import ClipRecord, Decision, Halt, HaltFacts, RiskEvent
from schemas.timefmt import format_ts
from streams.core import account as l1
from streams.core import symbol as l3
from streams.core.clusters import ClusterMap, ClusterParams, ClusterState
from streams.core.decision import Outcome, TradeContext, evaluate
from streams.core.ids import decision_id, stable_id
from streams.core.market import SymbolMarket, update_atr
from streams.core.portfolio import crossed_warning, exposures, heat_score
from streams.core.positions import Ledger, Position, add_pending, apply_fill
from streams.core.sizing import size_notional


@dataclass(frozen=True, slots=True)
class Output:
    """One output message: logical topic, key and value."""

    topic: str
    key: str | None
    value: OutputModel


@dataclass(slots=True)
class AccountBook:
    """Everything the engine keeps for one account, one field per level."""

    rules: RiskConfig
    level1: l1.AccountState = field(default_factory=l1.AccountState)
    symbols: dict[str, l3.SymbolState] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=Ledger)
    seen_fills: set[str] = field(default_factory=set)
    seen_signals: set[str] = field(default_factory=set)
    last_signal_ts: int | None = None


def cluster_params(config: Config) -> ClusterParams:
    """The market-wide cluster parameters of the file's `risk.clusters`."""
    c = config.risk.clusters
    return ClusterParams(
        window=c.window,
        min_periods=c.min_periods,
        threshold=c.threshold,
        method=c.method,
        demean_market=c.demean_market,
        static=tuple((name, tuple(members)) for name, members in sorted(c.static.items())),
    )


class Engine:
    """Deterministic, single-threaded guard engine over an ordered event sequence."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.version = config.config_version
        self.shadow = config.mode == "shadow"
        self.market: dict[str, SymbolMarket] = {}
        self.clusters = ClusterState(cluster_params(config))
        self.cluster_map: ClusterMap = self.clusters.current
        self._published_assignment: dict[str, str] = {}
        self.books: dict[str, AccountBook] = {}
        self.watchers: dict[str, set[str]] = {}
        self.stats: Counter[str] = Counter()
        self._atr_period = config.risk.sizing.atr_period

    # ------------------------------------------------------------------ routing
    def process(self, topic: str, event: InputModel) -> list[Output]:
        """Apply one validated input event and return every output it causes, in order."""
        if isinstance(event, Bar):
            return self._on_bar(event)
        if isinstance(event, Equity):
            return self._on_equity(event)
        if isinstance(event, Fill):
            return self._on_fill(event)
        if isinstance(event, Signal):
            return self._on_signal(event)
        if isinstance(event, Control):
            return self._on_control(event)
        raise TypeError(f"unsupported event on {topic}: {type(event).__name__}")

    def finish(self) -> list[Output]:
        """End of input: complete the pending bar timestamp of the cluster map."""
        cmap = self.clusters.flush()
        return self._cluster_outputs(cmap) if cmap is not None else []

    def book(self, account: str) -> AccountBook:
        book = self.books.get(account)
        if book is None:
            book = AccountBook(self.config.risk_for(account))
            self.books[account] = book
        return book

    # ------------------------------------------------------------------ level 1
    def _roll(self, account: str, book: AccountBook, ts: int) -> list[Output]:
        changes = l1.roll_day(book.level1, ts, book.rules.account)
        return self._halts(account, book, changes)

    def _halts(self, account: str, book: AccountBook, changes: Iterable[l1.StateChange]) -> list[Output]:
        out: list[Output] = []
        for change in changes:
            halt_id = stable_id("halt", account, change.ts, change.previous_state, change.state, change.reason)
            facts = HaltFacts(**change.facts)
            halt = Halt(
                halt_id=halt_id,
                account=account,
                ts=change.ts,
                state=change.state,
                previous_state=change.previous_state,
                reason=change.reason,
                until=change.until,
                facts=facts,
            )
            self.stats[f"halt_{change.state}"] += 1
            out.append(Output("halts", account, halt))
            if change.state in ("HALTED", "SHUTDOWN"):
                out.extend(self._flatten(account, book, change.ts, halt_id, change.state))
        return out

    def _flatten(self, account: str, book: AccountBook, ts: int, halt_id: str, state: str) -> list[Output]:
        out: list[Output] = []
        for sym in sorted(book.positions):
            position = book.positions[sym]
            if position.projected(ts) == 0:
                continue
            ctx = self._exit_context(book, sym, ts, "flatten", f"flatten_{state.lower()}", "account")
            out.extend(self._publish(account, book, sym, ts, "flatten", halt_id, ctx, evaluate(ctx)))
        return out

    def _on_equity(self, ev: Equity) -> list[Output]:
        book = self.book(ev.account)
        state = book.level1
        if state.last_equity_ts is not None and ev.ts < state.last_equity_ts:
            self.stats["out_of_order"] += 1
            return []
        out = self._roll(ev.account, book, ev.ts)
        changes = l1.apply_equity(state, ev.ts, ev.equity, ev.balance, book.rules.account)
        out.extend(self._halts(ev.account, book, changes))
        return out

    def _on_control(self, ev: Control) -> list[Output]:
        self.stats["controls_ignored"] += 1
        return []

    # ------------------------------------------------------------------ fills
    def _on_fill(self, ev: Fill) -> list[Output]:
        book = self.book(ev.account)
        if ev.fill_id in book.seen_fills:
            self.stats["duplicates"] += 1
            return []
        book.seen_fills.add(ev.fill_id)
        out = self._roll(ev.account, book, ev.ts)
        position = self._position(ev.account, book, ev.symbol)
        apply_fill(position, book.ledger, ev.signed_qty, ev.price, ev.fee, ev.decision_id)
        if position.last_price == 0.0:
            position.last_price = ev.price
        return out

    def _position(self, account: str, book: AccountBook, sym: str) -> Position:
        position = book.positions.get(sym)
        if position is None:
            position = Position()
            book.positions[sym] = position
            self.watchers.setdefault(sym, set()).add(account)
        return position

    def _symbol(self, account: str, book: AccountBook, sym: str) -> l3.SymbolState:
        state = book.symbols.get(sym)
        if state is None:
            state = l3.SymbolState()
            book.symbols[sym] = state
            self.watchers.setdefault(sym, set()).add(account)
        return state

    # ------------------------------------------------------------------ bars
    def _on_bar(self, bar: Bar) -> list[Output]:
        m = self.market.get(bar.symbol)
        if m is None:
            m = SymbolMarket()
            self.market[bar.symbol] = m
        if bar.ts <= m.last_ts:
            self.stats["duplicates" if bar.ts == m.last_ts else "out_of_order"] += 1
            return []
        update_atr(m, bar.high, bar.low, self._atr_period)
        m.last_ts, m.close = bar.ts, bar.close
        out: list[Output] = []
        cmap = self.clusters.on_bar(bar.symbol, bar.ts, bar.close)
        if cmap is not None:
            out.extend(self._cluster_outputs(cmap))
        for account in sorted(self.watchers.get(bar.symbol, ())):
            out.extend(self._bar_for_account(account, bar))
        return out

    def _cluster_outputs(self, cmap: ClusterMap) -> list[Output]:
        self.cluster_map = cmap
        if cmap.assignment == self._published_assignment:
            return []
        self._published_assignment = dict(cmap.assignment)
        clusters = {cid: list(members) for cid, members in sorted(cmap.members.items()) if len(members) > 1}
        event = RiskEvent(
            event_id=stable_id("evt", "cluster_map", cmap.version, cmap.ts),
            kind="cluster_map",
            account=None,
            ts=cmap.ts,
            details={
                "version": cmap.version,
                "symbols": len(cmap.assignment),
                "clusters": clusters,
                "singletons": sum(1 for members in cmap.members.values() if len(members) == 1),
                "largest": max((len(m) for m in cmap.members.values()), default=0),
            },
        )
        self.stats["cluster_maps"] += 1
        return [Output("events", None, event)]

    def _bar_for_account(self, account: str, bar: Bar) -> list[Output]:
        book = self.books[account]
        out = self._roll(account, book, bar.ts)
        sym = bar.symbol
        rules = book.rules
        position = book.positions.get(sym)
        sstate = book.symbols.get(sym)
        if position is not None:
            position.last_price = bar.close
            levels = rules.stops.for_symbol(sym)
            if position.qty != 0 and l3.has_stops(levels):
                hit = l3.check_stops(position, bar.open, bar.high, bar.low, levels)
                l3.mark_extremes(position, bar.high, bar.low)
                if hit is not None:
                    sstate = self._symbol(account, book, sym)
                    l3.stop_out(sstate, rules.stops)
                    sstate.last_eval = bar.ts
                    ctx = self._exit_context(book, sym, bar.ts, hit.origin, hit.origin, "per_symbol", hit.price)
                    self.stats[hit.origin] += 1
                    source = f"{sym}@{format_ts(bar.ts)}"
                    out.extend(self._publish(account, book, sym, bar.ts, hit.origin, source, ctx, evaluate(ctx)))
                    return out
            else:
                l3.mark_extremes(position, bar.high, bar.low)
        if sstate is None:
            return out
        if sstate.vetoed:
            l3.tick_cooldown(sstate, rules.stops)
            return out
        triggers = self.config.policy.rebalance_triggers
        if sstate.committed is None or not triggers.on_cadence_tick:
            return out
        due = sstate.last_eval is None or bar.ts - sstate.last_eval >= rules.per_symbol.rebalance_cadence
        if not due:
            if self._outside_band(book, sym, sstate.committed, bar.close, bar.ts):
                self.stats["noop_cadence"] += 1
            return out
        sstate.last_eval = bar.ts
        cctx = self._trade_context(account, book, sym, bar.ts, "cadence", bar.close, sstate.committed, sstate)
        if cctx is None:
            return out
        outcome = evaluate(replace(cctx, check_signal_change=False))
        if outcome.action == "NOOP":
            self.stats["noop_band"] += 1
            return out
        out.extend(
            self._publish(
                account,
                book,
                sym,
                bar.ts,
                "cadence",
                f"{sym}@{format_ts(bar.ts)}",
                replace(cctx, check_signal_change=False),
                outcome,
            )
        )
        return out

    def _outside_band(self, book: AccountBook, sym: str, target: float, price: float, ts: int) -> bool:
        position = book.positions.get(sym)
        value = position.projected(ts) * price if position is not None else 0.0
        band = book.rules.per_symbol.band_pct
        lo, hi = (
            (target * (1 - band), target * (1 + band)) if target >= 0 else (target * (1 + band), target * (1 - band))
        )
        return not lo <= value <= hi

    # ------------------------------------------------------------------ signals
    def _on_signal(self, sig: Signal) -> list[Output]:
        book = self.book(sig.account)
        if sig.signal_id in book.seen_signals:
            self.stats["duplicates"] += 1
            return []
        if book.last_signal_ts is not None and sig.ts < book.last_signal_ts:
            self.stats["out_of_order"] += 1
            return []
        book.seen_signals.add(sig.signal_id)
        book.last_signal_ts = sig.ts
        out = self._roll(sig.account, book, sig.ts)
        sstate = self._symbol(sig.account, book, sig.symbol)
        m = self.market.get(sig.symbol)
        price = sig.price if sig.price is not None else (m.close if m is not None and m.close > 0 else None)
        equity = self._equity(book)
        if price is None or equity is None:
            reason, layer = ("no_price", "per_symbol") if price is None else ("equity_unknown", "account")
            out.append(self._bare_decision(sig, price or 0.0, "DENY", layer, reason, equity))
            return out
        rules = book.rules
        scale = l1.vol_scale(book.level1, rules.portfolio.vol_target)
        facts_extra: dict[str, Any] = {}
        if sig.target_notional is not None:
            raw = sig.target_notional
        elif sig.target_weight is not None:
            raw = sig.target_weight * equity
        else:
            atr = sig.atr if sig.atr is not None else (m.atr if m is not None else None)
            assert sig.direction is not None  # noqa: S101 - schema guarantees one target
            raw, method = size_notional(sig.direction.value, equity, price, atr, rules.sizing, book.ledger)
            facts_extra = {"sizing_method": method, "atr": atr}
        ctx = self._trade_context(sig.account, book, sig.symbol, sig.ts, "signal", price, raw * scale, sstate)
        assert ctx is not None  # noqa: S101 - equity checked above
        sstate.last_eval = sig.ts
        outcome = evaluate(ctx)
        if outcome.reason == "within_band":
            self.stats["noop_band"] += 1
        out.extend(
            self._publish(sig.account, book, sig.symbol, sig.ts, "signal", sig.signal_id, ctx, outcome, facts_extra)
        )
        return out

    def _equity(self, book: AccountBook) -> float | None:
        if book.level1.equity is not None:
            return book.level1.equity
        return book.rules.account.initial_balance

    def _bare_decision(
        self, sig: Signal, price: float, action: str, layer: str, reason: str, equity: float | None
    ) -> Output:
        decision = Decision(
            decision_id=decision_id(sig.account, "signal", sig.signal_id, sig.symbol),
            account=sig.account,
            symbol=sig.symbol,
            ts=sig.ts,
            origin="signal",
            source_id=sig.signal_id,
            action=action,
            side=None,
            qty=0.0,
            requested_qty=0.0,
            price=price,
            notional=0.0,
            layer=layer,
            reason=reason,
            facts={
                "price": price,
                "equity": equity,
                "trading_state": self.books[sig.account].level1.trading_state,
            },
            mode="shadow" if self.shadow else "enforce",
            config_version=self.version,
        )
        self.stats[f"orders_denied_{layer}"] += 1
        return Output("decisions", sig.account, decision)

    # ------------------------------------------------------------------ context and publication
    def _values(self, book: AccountBook, ts: int) -> list[tuple[str, float]]:
        values = []
        for sym, position in book.positions.items():
            qty = position.projected(ts)
            if qty != 0:
                m = self.market.get(sym)
                mark = m.close if m is not None and m.close > 0 else position.last_price
                values.append((sym, qty * mark))
        return values

    def _trade_context(
        self,
        account: str,
        book: AccountBook,
        sym: str,
        ts: int,
        origin: str,
        price: float,
        target: float,
        sstate: l3.SymbolState,
    ) -> TradeContext | None:
        equity = self._equity(book)
        if equity is None:
            return None
        rules = book.rules
        position = book.positions.get(sym)
        filled = position.qty if position is not None else 0.0
        pending = position.pending_qty(ts) if position is not None else 0.0
        values = [(s, v) for s, v in self._values(book, ts) if s != sym]
        values.append((sym, (filled + pending) * price))
        group = rules.groups.group_of(sym)
        cluster = self.cluster_map.cluster_of(sym)
        exp = exposures(values, rules.groups.group_of, self.cluster_map.cluster_of, group, cluster)
        conc = rules.concentration
        quota = l1.quota_headroom(book.level1, rules.account.daily_entry_quota_pct)
        triggers = self.config.policy.rebalance_triggers
        state = book.level1.trading_state if (book.level1.initialized or equity > 0) else "UNKNOWN"
        return TradeContext(
            origin=origin,
            price=price,
            filled_qty=filled,
            pending_qty=pending,
            equity=equity,
            trading_state=state,
            requested_target=target,
            committed_target=sstate.committed,
            check_signal_change=triggers.on_signal_change,
            signal_change_threshold=triggers.signal_change_threshold,
            vetoed=sstate.vetoed,
            symbol_cap=rules.per_symbol.cap_for(sym),
            weight_cap=rules.per_symbol.max_weight_pct * equity
            if rules.per_symbol.max_weight_pct is not None
            else None,
            band_pct=rules.per_symbol.band_pct,
            band_enabled=triggers.on_threshold_breach,
            rebalance_to=rules.per_symbol.rebalance_to,
            max_notional=rules.per_trade.max_notional,
            lot_size=rules.per_trade.lot_size,
            min_order_notional=rules.per_trade.min_order_notional,
            quota_headroom=quota,
            cluster_id=cluster,
            cluster_exposure=exp.cluster_exposure,
            cluster_cap=rules.clusters.cap_pct * equity if rules.clusters.cap_pct is not None else None,
            cluster_critical=conc.cluster[1] * equity,
            group=group,
            group_exposure=exp.group_exposure,
            group_cap=rules.groups.cap_for(group),
            group_critical=conc.group[1] * equity if group != "Default" else None,
            gross=exp.gross,
            gross_cap=rules.portfolio.gross_cap,
            net=exp.net,
            net_cap=rules.portfolio.net_cap,
            position_critical=conc.position[1] * equity,
            vol_scale=l1.vol_scale(book.level1, rules.portfolio.vol_target),
        )

    def _exit_context(
        self,
        book: AccountBook,
        sym: str,
        ts: int,
        origin: str,
        reason: str,
        layer: str,
        price: float | None = None,
    ) -> TradeContext:
        position = book.positions[sym]
        m = self.market.get(sym)
        mark = price if price is not None else (m.close if m is not None and m.close > 0 else position.last_price)
        equity = self._equity(book)
        return TradeContext(
            origin=origin,
            price=mark,
            filled_qty=position.qty,
            pending_qty=position.pending_qty(ts),
            equity=equity if equity is not None else 0.0,
            trading_state=book.level1.trading_state,
            exit=True,
            exit_reason=reason,
            exit_layer=layer,
        )

    def _publish(
        self,
        account: str,
        book: AccountBook,
        sym: str,
        ts: int,
        origin: str,
        source_id: str,
        ctx: TradeContext,
        outcome: Outcome,
        facts_extra: dict[str, Any] | None = None,
    ) -> list[Output]:
        if not outcome.published:
            return []
        sstate = book.symbols.get(sym)
        if sstate is not None and outcome.commit_target is not None and origin == "signal":
            sstate.committed = outcome.commit_target
        did = decision_id(account, origin, source_id, sym)
        signed = outcome.signed_qty
        if signed != 0 and not self.shadow:
            position = self._position(account, book, sym)
            add_pending(position, did, signed, ts + book.rules.pending_ttl)
            book.level1.quota_used += outcome.opening_notional
        facts = ctx.to_facts()
        facts["band"] = list(outcome.band) if outcome.band is not None else None
        if facts_extra:
            facts.update(facts_extra)
        out: list[Output] = []
        if signed != 0 and not ctx.exit:
            facts["heat"], warnings = self._concentration(account, book, sym, ctx, signed)
            out_warn = warnings
        else:
            out_warn = []
        decision = Decision(
            decision_id=did,
            account=account,
            symbol=sym,
            ts=ts,
            origin=origin,
            source_id=source_id,
            action=outcome.action,
            side=outcome.side,
            qty=outcome.qty,
            requested_qty=outcome.requested_qty,
            price=ctx.price,
            notional=outcome.qty * ctx.price,
            layer=outcome.layer,
            reason=outcome.reason,
            clips=[ClipRecord(layer=c.layer, reason=c.reason, before=c.before, after=c.after) for c in outcome.clips],
            facts=facts,
            mode="shadow" if self.shadow else "enforce",
            config_version=self.version,
        )
        self._count(outcome)
        out.append(Output("decisions", account, decision))
        out.extend(out_warn)
        return out

    def _count(self, outcome: Outcome) -> None:
        if outcome.action == "ALLOW":
            self.stats["orders_allowed"] += 1
        elif outcome.action == "CLIP":
            self.stats[f"orders_clipped_{outcome.layer}"] += 1
        elif outcome.action == "DENY":
            self.stats[f"orders_denied_{outcome.layer}"] += 1
        else:
            self.stats[f"noop_{outcome.reason}"] += 1

    def _concentration(
        self, account: str, book: AccountBook, sym: str, ctx: TradeContext, signed: float
    ) -> tuple[float, list[Output]]:
        equity = ctx.equity
        before = ctx.projected_qty * ctx.price
        after = before + signed * ctx.price
        m = self.market.get(sym)
        atr = m.atr if m is not None and m.atr is not None else 0.0
        heat = heat_score(after, (ctx.projected_qty + signed) * atr * book.rules.sizing.atr_multiplier, equity)
        if equity <= 0:
            return heat, []
        conc = book.rules.concentration
        delta = abs(after) - abs(before)
        buckets = (
            ("position", sym, abs(before), conc.position[0]),
            ("group", ctx.group, ctx.group_exposure, conc.group[0] if ctx.group != "Default" else math.inf),
            ("cluster", ctx.cluster_id, ctx.cluster_exposure, conc.cluster[0]),
        )
        out: list[Output] = []
        for bucket, name, exposure, warn in buckets:
            weight_before, weight_after = exposure / equity, (exposure + delta) / equity
            if crossed_warning(weight_before, weight_after, warn):
                event = RiskEvent(
                    event_id=stable_id("evt", "concentration", account, bucket, name, ctx.origin, ctx.price, signed),
                    kind="concentration_warning",
                    account=account,
                    ts=book.level1.last_equity_ts or 0,
                    details={
                        "bucket": bucket,
                        "name": name,
                        "weight": weight_after,
                        "warn": warn,
                        "symbol": sym,
                    },
                )
                out.append(Output("events", account, event))
        return heat, out
