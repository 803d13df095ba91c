"""Level 4, the portfolio stage, and the decision kernel's caller: group, cluster, gross and net caps.

Per account: projected positions (filled + pending decisions), the day's entry quota, Level 1's view
and the last rebalance run; partition-wide: marks, ATR and the cluster map it caps by. Every decision
is made here: `streams.core.kernel.decision.evaluate` over a context gathered from this level's state
and the item's notes. Its rules sit beside it: `exposure.py` (exposures, concentration, heat) and
`rebalance.py` (the run's plan); `snapshot.py` stores its state per account.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from statistics import NormalDist
from typing import Any
from zoneinfo import ZoneInfo

from schemas.config import Config, RiskConfig
from schemas.inputs import Bar, Signal
from schemas.outputs import ClipRecord, Decision, RebalanceRun, RiskEvent
from schemas.timefmt import format_ts
from streams.core import budget as bm
from streams.core.ids import decision_id, stable_id
from streams.core.items import AccountView, Item, Level, Output, Result, account_keys, part_key
from streams.core.kernel.decision import Outcome, TradeContext, band_of, evaluate, inside_band
from streams.core.levels.market.clusters import STATIC_PREFIX
from streams.core.levels.portfolio.exposure import ExposureSums, crossed_warning, heat_score
from streams.core.levels.portfolio.rebalance import Holding, plan_rebalance
from streams.core.levels.symbol.targets import weight_cap
from streams.core.positions import Ledger, Position, add_pending, apply_fill


@dataclass(slots=True)
class PortfolioBook:
    """Level-4 state of one account: projected positions, the day's entry quota, the account view."""

    positions: dict[str, Position] = field(default_factory=dict)
    quota_used: float = 0.0
    quota_day: int | None = None
    view: AccountView | None = None
    last_run: dict[str, Any] | None = None
    # exposure sums kept up to date between decisions (`PortfolioStage._sums`): derived, never stored
    sums: ExposureSums | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class PortfolioMarket:
    """Level-4 state of one partition: marks, ATR and the cluster map it caps by."""

    closes: dict[str, float] = field(default_factory=dict)
    atr: dict[str, float] = field(default_factory=dict)
    clusters: dict[str, str] = field(default_factory=dict)
    sigma: dict[str, float] = field(default_factory=dict)  # Level 2's σ per symbol (VaR entry quota)
    beta: dict[str, float] = field(default_factory=dict)  # Level 2's beta per symbol (factor cap)
    # With the rebalance's `today_bias`: symbol -> [local day, its last close, the previous day's last close].
    day_closes: dict[str, list[Any]] = field(default_factory=dict)


def _local_day(ts: int, zone: str) -> int:
    """The date (ordinal) of epoch-ms `ts` in the IANA `zone`."""
    return datetime.fromtimestamp(ts / 1000, ZoneInfo(zone)).date().toordinal()


@lru_cache(maxsize=64)
def _z(confidence: float) -> float:
    """The standard normal quantile of a one-sided confidence (0.99 -> 2.326...)."""
    return NormalDist().inv_cdf(confidence)


def position_key(account: str, sym: str) -> str:
    """The table key of an account's position in `sym` (kept apart from the account's own key)."""
    return part_key(account, "pos", sym)


class PortfolioStage(Level):
    """Level 4 and the decision kernel: group, cluster, gross and net caps; every decision.

    It changes its state in place (why: `streams.core.items.Stage`); the pure decisions live in
    `decision.evaluate` (the kernel), `exposure.exposures`, `rebalance.plan_rebalance`.
    """

    name = "portfolio"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.version = config.config_version
        self.shadow = config.mode == "shadow"
        self.books: dict[str, PortfolioBook] = {}
        self.market = PortfolioMarket()
        # position keys (`position_key`) changed since `touched` last asked (bounded: accounts x symbols)
        self.positions_changed: set[str] = set()
        self._today_bias = config.rebalance.today_bias is not None
        self._cluster_version = 0  # bumped with every cluster map: the exposure sums are rebuilt
        self._holders: dict[str, set[str]] = {}  # symbol -> accounts whose exposure sums count it
        static = config.risk.clusters.static
        # Static clusters hold from the first event, before Level 2 publishes its first map (SPEC §6.2).
        self.static = {sym: STATIC_PREFIX + name for name, members in sorted(static.items()) for sym in members}

    def book(self, account: str) -> PortfolioBook:
        book = self.books.get(account)
        if book is None:
            book = PortfolioBook()
            self.books[account] = book
        return book

    def cluster_of(self, symbol: str) -> str:
        cluster = self.market.clusters.get(symbol)
        return cluster if cluster is not None else self.static.get(symbol, "c:" + symbol)

    def process(self, item: Item) -> Result:
        if item.kind == "cluster_map":
            self.market.clusters = dict(item.notes["assignment"])
            self._cluster_version += 1
            return [], []
        if item.kind == "market_figures":
            self.market.sigma = dict(item.notes.get("sigma", {}))
            self.market.beta = dict(item.notes.get("beta", {}))
            return [], []
        if item.kind == "bar":
            return self._bar(item), []
        if item.account is None:
            return [], []
        account = item.account
        book = self.book(account)
        outputs: list[Output] = []
        if "account" in item.notes:
            self._view(book, AccountView.from_json(item.notes["account"]))
        for halt_id, state, ts in item.notes.get("flatten", ()):
            outputs += self._flatten(account, book, ts, halt_id, state)
        if item.kind == "fill":
            fill = item.fill
            position = self._position(account, book, fill.symbol)
            apply_fill(position, Ledger(), fill.signed_qty, fill.price, fill.fee, fill.decision_id)
            if fill.symbol not in self.market.closes:
                position.last_price = fill.price
        elif item.kind == "signal":
            outputs += self._signal(account, book, item)
        elif item.kind == "control":
            self.stats[f"control_{item.control.command.value.lower()}"] += 1
        run = item.notes.get("rebalance")
        if run is not None:
            outputs += self._rebalance(account, book, run)
        return outputs, []

    def touched(self, item: Item, forwarded: list[Item]) -> set[str]:
        """The keys `process(item)` may have changed: the account, or every account a bar works for."""
        keys = account_keys(item, forwarded, partition=item.kind in ("bar", "cluster_map", "market_figures"))
        if item.kind == "bar":
            keys.update(item.notes.get("accounts", {}))
        if self.positions_changed:
            keys |= self.positions_changed
            self.positions_changed = set()
        return keys

    def _rebalance(self, account: str, book: PortfolioBook, run: dict[str, Any]) -> list[Output]:
        """A target-weight rebalance run (seed 004) whose orders pass the guards like any other trade.

        `run` is the note of whatever started it: a control, the schedule or a budget trigger. With the
        budget on, target weights are scaled to fit the regime's gross budget first.
        """
        policy = self.config.rebalance
        ts: int = run["ts"]
        holdings: dict[str, Holding] = {}
        unpriced: list[str] = []
        for sym in sorted(book.positions):
            position = book.positions[sym]
            qty = position.projected(ts)
            mark = self._mark(sym, position)
            if qty != 0 and mark > 0:
                holdings[sym] = Holding(qty, mark, position.avg_entry, self._prev_close(sym))
            elif qty != 0:
                unpriced.append(sym)  # pending only, no bar nor fill yet: no price to plan it with, left out
        raw_targets = run.get("targets")
        targets = {str(k): float(v) for k, v in raw_targets.items()} if isinstance(raw_targets, dict) else None
        for sym in sorted((targets or policy.targets).keys()):
            if sym not in holdings and sym in self.market.closes:
                holdings[sym] = Holding(0.0, self.market.closes[sym])
        view = book.view
        equity = view.equity if view is not None and view.equity is not None else 0.0
        cash = equity - math.fsum(h.qty * h.price for h in holdings.values())
        regime = view.regime if view is not None else None
        weights = targets if targets is not None else dict(policy.targets)
        if not weights and holdings:
            weights = {sym: 1.0 / len(holdings) for sym in holdings}  # equal weight, as the plan would
        scale = bm.target_scale(self.config.budget, regime, weights)
        if scale < 1:
            targets = {sym: weight * scale for sym, weight in sorted(weights.items())}
        plan = plan_rebalance(holdings, cash, targets, policy)
        run_id: str = run["run_id"]
        preview = bool(run.get("preview", False))
        outputs: list[Output] = []
        verdicts: list[dict[str, Any]] = []
        if not preview:
            for order in plan.orders:
                held = book.positions.get(order.symbol)
                value = held.projected(ts) * order.price if held is not None else 0.0
                signed = order.notional if order.side == "BUY" else -order.notional
                base = self._trade_context(
                    account, book, order.symbol, ts, "rebalance", order.price, value + signed, None
                )
                if base is None:
                    continue
                ctx = replace(base, check_signal_change=False, band_enabled=False, rebalance_to="target")
                published = self._publish(account, book, order.symbol, ts, "rebalance", run_id, ctx, evaluate(ctx))
                for output in published:
                    if isinstance(output.value, Decision):
                        verdicts.append(
                            {
                                "symbol": order.symbol,
                                "decision_id": output.value.decision_id,
                                "action": output.value.action.value,
                                "qty": output.value.qty,
                            }
                        )
                outputs += published
        record = plan.record()
        inputs = record["inputs"]
        if scale < 1:
            inputs["budget"] = {
                "regime": regime,
                "scale": scale,
                "requested_target_weights": dict(sorted(weights.items())),
            }
        if "scheduled_at" in run:
            inputs["scheduled_at"] = format_ts(run["scheduled_at"])
        if "triggers" in run:
            inputs["budget_triggers"] = list(run["triggers"])
        if unpriced:
            inputs["unpriced_holdings"] = unpriced
        status = "preview" if preview else "executed"
        record_run = RebalanceRun(
            run_id=run_id,
            account=account,
            ts=ts,
            status=status,
            trigger=run["trigger"],
            policy=record["policy"],
            inputs=inputs,
            orders=record["orders"],
            summary={**record["summary"], "decisions": verdicts},
        )
        book.last_run = {"run_id": run_id, "ts": ts, "trigger": run["trigger"], "status": status}
        self.stats["rebalance_runs"] += 1
        self.stats[f"rebalance_runs_{run['trigger']}"] += 1
        return [Output("rebalance_runs", account, record_run), *outputs]

    def _view(self, book: PortfolioBook, view: AccountView) -> None:
        if view.day_start != book.quota_day:
            book.quota_day = view.day_start
            book.quota_used = 0.0
        book.view = view

    def _position(self, account: str, book: PortfolioBook, sym: str) -> Position:
        """The account's position in `sym`, to be changed: every change of a position goes through here, so
        that its key is stored (`touched`). Expired pending entries, dropped as they are read, are not
        changes: stored, they are expired on restore too."""
        position = book.positions.get(sym)
        if position is None:
            position = Position()
            book.positions[sym] = position
        self.positions_changed.add(position_key(account, sym))
        if book.sums is not None:
            book.sums.dirty.add(sym)  # the caller changes it: value it again when next read
        return position

    def _mark(self, sym: str, position: Position) -> float:
        close = self.market.closes.get(sym)
        return close if close is not None else position.last_price

    def _prev_close(self, sym: str) -> float | None:
        closes = self.market.day_closes.get(sym)
        return closes[2] if closes is not None else None

    def _day_close(self, sym: str, ts: int, close: float) -> None:
        """Keep the last close of the symbol's latest and previous trading day (rebalance timezone)."""
        day = _local_day(ts, self.config.rebalance.timezone)
        closes = self.market.day_closes.get(sym)
        if closes is None:
            self.market.day_closes[sym] = [day, close, None]
        elif day == closes[0]:
            closes[1] = close
        elif day > closes[0]:
            self.market.day_closes[sym] = [day, close, closes[1]]

    def _bar(self, item: Item) -> list[Output]:
        bar: Bar = item.event  # type: ignore[assignment]  # a `bar` item carries a Bar (`items.item_for`)
        notes = item.notes
        self.market.closes[bar.symbol] = bar.close
        for account in self._holders.get(bar.symbol, ()):  # its mark moved: value it again when next read
            sums = self.books[account].sums
            if sums is not None:
                sums.dirty.add(bar.symbol)
        if self._today_bias:
            self._day_close(bar.symbol, bar.ts, bar.close)
        atr = notes.get("atr")
        if atr is not None:
            self.market.atr[bar.symbol] = atr
        work = notes.get("accounts")
        if not work:
            return []
        outputs: list[Output] = []
        source = None
        for account, note in work.items():
            book = self.book(account)
            if "wait" in note:
                if self._outside_band(account, book, bar.symbol, note["wait"], bar.close, bar.ts):
                    self.stats["noop_cadence"] += 1
                continue
            source = source or f"{bar.symbol}@{format_ts(bar.ts)}"
            if "stop" in note:
                origin, price = note["stop"]
                if bar.symbol in book.positions:
                    ctx = self._exit_context(book, bar.symbol, bar.ts, origin, origin, "per_symbol", price)
                    outputs += self._publish(account, book, bar.symbol, bar.ts, origin, source, ctx, evaluate(ctx))
                continue
            cadence = self._trade_context(
                account, book, bar.symbol, bar.ts, "cadence", bar.close, note["cadence"], None, signal_change=False
            )
            if cadence is None:
                continue
            outcome = evaluate(cadence)
            if outcome.action == "NOOP":
                self.stats["noop_band"] += 1
                continue
            outputs += self._publish(account, book, bar.symbol, bar.ts, "cadence", source, cadence, outcome)
        return outputs

    def _outside_band(self, account: str, book: PortfolioBook, sym: str, target: float, price: float, ts: int) -> bool:
        position = book.positions.get(sym)
        value = position.projected(ts) * price if position is not None else 0.0
        return not inside_band(value, band_of(target, self.rules(account).per_symbol.band_pct))

    def _flatten(self, account: str, book: PortfolioBook, ts: int, halt_id: str, state: str) -> list[Output]:
        outputs: list[Output] = []
        for sym in sorted(book.positions):
            if book.positions[sym].projected(ts) == 0:
                continue
            ctx = self._exit_context(book, sym, ts, "flatten", f"flatten_{state.lower()}", "account")
            outputs += self._publish(account, book, sym, ts, "flatten", halt_id, ctx, evaluate(ctx))
        return outputs

    def _signal(self, account: str, book: PortfolioBook, item: Item) -> list[Output]:
        sig = item.signal
        notes = item.notes
        if "deny" in notes:
            layer, reason = notes["deny"]
            return [self._bare_decision(book, sig, notes["price"], layer, reason)]
        ctx = self._trade_context(
            account,
            book,
            sig.symbol,
            sig.ts,
            "signal",
            notes["price"],
            notes["target"],
            notes["committed"],
            vetoed=notes["vetoed"],
        )
        assert ctx is not None  # noqa: S101 - Level 3 denied signals without equity
        outcome = evaluate(ctx)
        if outcome.reason == "within_band":
            self.stats["noop_band"] += 1
        return self._publish(
            account, book, sig.symbol, sig.ts, "signal", sig.signal_id, ctx, outcome, notes.get("sizing")
        )

    def _bare_decision(self, book: PortfolioBook, sig: Signal, price: float, layer: str, reason: str) -> Output:
        view = book.view
        decision = Decision(
            decision_id=decision_id(sig.account, "signal", sig.signal_id, sig.symbol),
            account=sig.account,
            symbol=sig.symbol,
            ts=sig.ts,
            origin="signal",
            source_id=sig.signal_id,
            action="DENY",
            side=None,
            qty=0.0,
            requested_qty=0.0,
            price=price,
            notional=0.0,
            layer=layer,
            reason=reason,
            facts={
                "price": price,
                "equity": view.equity if view is not None else None,
                "trading_state": view.trading_state if view is not None else "ACTIVE",
            },
            mode="shadow" if self.shadow else "enforce",
            config_version=self.version,
        )
        self.stats[f"orders_denied_{layer}"] += 1
        return Output("decisions", sig.account, decision)

    def _sums(self, account: str, book: PortfolioBook, group_of: Any, ts: int) -> ExposureSums:
        """The account's exposure sums at event time `ts`: what changed since the last read valued again.

        Each position is valued as a decision always valued it, projected quantity (expired pending
        decisions dropped) x mark, counted when the quantity is not zero. A new cluster map (or none
        yet) rebuilds the sums from every position.
        """
        sums = book.sums
        if sums is None or sums.cluster_version != self._cluster_version:
            sums = book.sums = ExposureSums(self._cluster_version)
            sums.dirty.update(book.positions)
        else:
            sums.take_due(ts)
        for sym in sums.dirty:
            position = book.positions.get(sym)
            value = None
            if position is not None:
                qty = position.projected(ts)
                if qty != 0:
                    value = qty * self._mark(sym, position)
                if position.pending:
                    sums.expires(sym, position.pending_until)
            sums.put(sym, value, group_of(sym), self.cluster_of(sym))
            if value is not None:
                self._holders.setdefault(sym, set()).add(account)
        sums.dirty.clear()
        return sums

    def _trade_context(
        self,
        account: str,
        book: PortfolioBook,
        sym: str,
        ts: int,
        origin: str,
        price: float,
        target: float,
        committed: float | None,
        vetoed: bool = False,
        signal_change: bool | None = None,
    ) -> TradeContext | None:
        """The kernel's context; `signal_change` overrides the trigger's `on_signal_change` (False: cadence)."""
        view = book.view
        if view is None or view.equity is None:
            return None
        equity = view.equity
        rules = self.rules(account)
        position = book.positions.get(sym)
        filled = position.qty if position is not None else 0.0
        pending = position.pending_qty(ts) if position is not None else 0.0
        group = rules.groups.group_of(sym)
        cluster = self.cluster_of(sym)
        sums = self._sums(account, book, rules.groups.group_of, ts)
        value = (filled + pending) * price
        exp = sums.exposure(sym, value, group, cluster)
        conc = rules.concentration
        # The day's entry quota (`account.daily_entry_quota`): kept here, where every opening is decided.
        entry_quota = rules.account.entry_quota
        quota = None
        if entry_quota is not None:
            quota = max(entry_quota.pct * view.day_start_equity - book.quota_used, 0.0)
        beta_cap = bm.beta_pct(self.config.budget, view.regime, rules.factor.max_abs_beta_pct)
        beta = self.market.beta.get(sym, 1.0) if self.config.risk.factor.benchmark is not None else None
        triggers = self.config.policy.rebalance_triggers
        state = view.trading_state if (view.initialized or equity > 0) else "UNKNOWN"
        weight_limit = weight_cap(rules, equity)
        budget_cap = bm.budget_cap(self.config.budget, view.regime, equity)
        return TradeContext(
            origin=origin,
            price=price,
            filled_qty=filled,
            pending_qty=pending,
            equity=equity,
            trading_state=state,
            requested_target=target,
            committed_target=committed,
            check_signal_change=triggers.on_signal_change if signal_change is None else signal_change,
            signal_change_threshold=triggers.signal_change_threshold,
            vetoed=vetoed,
            symbol_cap=rules.per_symbol.cap_for(sym),
            weight_cap=weight_limit,
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
            budget_cap=budget_cap,
            net=exp.net,
            net_cap=rules.portfolio.net_cap,
            position_critical=conc.position[1] * equity,
            vol_scale=view.vol_scale,
            quota_measure=entry_quota.measure if entry_quota is not None else None,
            quota_used=book.quota_used if entry_quota is not None else None,
            quota_rate=self._quota_rate(rules, sym),
            cash=view.cash,
            buying_power=self._buying_power(rules, book, view.cash, ts),
            beta=beta,
            beta_exposure=self._beta_exposure(sums.contrib, sym, value) if beta is not None else None,
            beta_cap=beta_cap * equity if beta_cap is not None and beta is not None else None,
        )

    def _quota_rate(self, rules: RiskConfig, sym: str) -> float:
        """Quota used per unit of opening notional: 1, the margin rate, or z × σ (SPEC §6.1)."""
        quota = rules.account.entry_quota
        if quota is None or quota.measure == "notional":
            return 1.0
        if quota.measure == "margin":
            return rules.account.margin_rates.rate_for(sym)
        sigma = self.market.sigma.get(sym)
        # σ unknown (fewer than min_periods returns): the part counts at its full notional.
        return _z(quota.confidence) * sigma if sigma is not None else 1.0

    def _buying_power(self, rules: RiskConfig, book: PortfolioBook, cash: float | None, ts: int) -> float | None:
        """cash × multiplier − the notional of pending risk-increasing buys; None: off, or no cash seen yet."""
        power = rules.account.buying_power
        if power is None or cash is None:
            return None
        held = math.fsum(book.positions[s].pending_buys(ts) for s in sorted(book.positions))
        return cash * power.multiplier - held

    def _beta_exposure(self, contrib: dict[str, float], sym: str, value: float) -> float:
        """B = Σ signed value × beta over the projected positions, `sym` at `value` (beta 1.0 where Level 2
        has none). Over every position (betas move with each bar timestamp): only with the factor rule."""
        beta = self.market.beta
        others = (v * beta.get(s, 1.0) for s, v in contrib.items() if s != sym)
        return math.fsum([*others, value * beta.get(sym, 1.0)])

    def _exit_context(
        self,
        book: PortfolioBook,
        sym: str,
        ts: int,
        origin: str,
        reason: str,
        layer: str,
        price: float | None = None,
    ) -> TradeContext:
        position = book.positions[sym]
        mark = price if price is not None else self._mark(sym, position)
        view = book.view
        return TradeContext(
            origin=origin,
            price=mark,
            filled_qty=position.qty,
            pending_qty=position.pending_qty(ts),
            equity=view.equity if view is not None and view.equity is not None else 0.0,
            trading_state=view.trading_state if view is not None else "ACTIVE",
            exit=True,
            exit_reason=reason,
            exit_layer=layer,
        )

    def _publish(
        self,
        account: str,
        book: PortfolioBook,
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
        did = decision_id(account, origin, source_id, sym)
        signed = outcome.signed_qty
        rules = self.rules(account)
        if signed != 0 and not self.shadow:
            opening_buy = outcome.opening_notional / ctx.price if signed > 0 else 0.0
            price = ctx.price if opening_buy > 0 else 0.0
            position = self._position(account, book, sym)
            add_pending(position, did, signed, ts + rules.pending_ttl, opening_buy, price)
            if sym not in self.market.closes:
                position.last_price = ctx.price  # no bar yet: the pending part is valued at its decision's price
            book.quota_used += outcome.opening_notional * ctx.quota_rate
        facts = ctx.to_facts()
        facts["band"] = list(outcome.band) if outcome.band is not None else None
        if self.config.budget.enabled and book.view is not None:
            facts["regime"] = book.view.regime
        if facts_extra:
            facts.update(facts_extra)
        warnings: list[Output] = []
        if signed != 0 and not ctx.exit:
            facts["heat"], warnings = self._concentration(account, rules, sym, ctx, signed, ts)
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
        return [Output("decisions", account, decision), *warnings]

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
        self, account: str, rules: RiskConfig, sym: str, ctx: TradeContext, signed: float, ts: int
    ) -> tuple[float, list[Output]]:
        equity = ctx.equity
        before = ctx.projected_qty * ctx.price
        after = before + signed * ctx.price
        atr = self.market.atr.get(sym, 0.0)
        heat = heat_score(after, (ctx.projected_qty + signed) * atr * rules.sizing.atr_multiplier, equity)
        if equity <= 0:
            return heat, []
        conc = rules.concentration
        delta = abs(after) - abs(before)
        buckets = (
            ("position", sym, abs(before), conc.position[0]),
            ("group", ctx.group, ctx.group_exposure, conc.group[0] if ctx.group != "Default" else math.inf),
            ("cluster", ctx.cluster_id, ctx.cluster_exposure, conc.cluster[0]),
        )
        outputs: list[Output] = []
        for bucket, name, exposure, warn in buckets:
            weight_before, weight_after = exposure / equity, (exposure + delta) / equity
            if crossed_warning(weight_before, weight_after, warn):
                event = RiskEvent(
                    event_id=stable_id("evt", "concentration", account, bucket, name, ctx.origin, ts, signed),
                    kind="concentration_warning",
                    account=account,
                    ts=ts,
                    details={"bucket": bucket, "name": name, "weight": weight_after, "warn": warn, "symbol": sym},
                )
                outputs.append(Output("events", account, event))
        return heat, outputs
