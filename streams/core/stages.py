"""The guard as four level stages, each `state + item -> (outputs, items for the next level)`.

Level 2 (market: prices, ATR, clusters) -> Level 1 (account) -> Level 3 (symbol) -> Level 4
(portfolio, where the decision kernel runs). Each stage keeps only its own level's state, and a
later stage learns what an earlier one decided from the notes on the item, never by reading its
state. That is what lets the Faust shell run one agent and one table per level over an ordered,
account-keyed log, and the in-process `Engine` run the very same stages one after the other.

Partition-wide items (bars, cluster maps) reach every partition; account items reach the account's
partition. A stage that serves partition `p` only knows the accounts it has seen there.

Rebalance runs and the risk budget follow the same rule. Level 1 keeps each account's schedule
(`next_rebalance_at`), its regime and the budget triggers it can see (regime change, correlation
spike from Level 2, vol breach of its equity); Level 3 the drift trigger (its filled positions).
A level that starts a run puts a `rebalance` note on the account's item: Level 3 clears the
account's re-entry vetoes and Level 4 plans and runs it, whatever started it (control, schedule,
budget).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from schemas.base import OutputModel
from schemas.config import Config, RebalancePolicy, RiskConfig
from schemas.inputs import Bar, Control, Equity, Fill, Signal
from schemas.outputs import (
    ClipRecord,
    DeadLetter,
    DeadLetterSource,
    Decision,
    Halt,
    HaltFacts,
    RebalanceRun,
    RiskEvent,
)
from schemas.timefmt import format_ts
from streams.core import account as l1
from streams.core import budget as bm
from streams.core import symbol as l3
from streams.core.clusters import STATIC_PREFIX, ClusterMap, ClusterParams, ClusterState
from streams.core.controls import AUTO_REGIME, ControlGate, params_problem
from streams.core.decision import Outcome, TradeContext, band_of, evaluate
from streams.core.ids import decision_id, stable_id
from streams.core.market import SymbolMarket, update_atr
from streams.core.portfolio import crossed_warning, exposures, heat_score
from streams.core.positions import Ledger, Position, add_pending, apply_fill
from streams.core.rebalance import Holding, plan_rebalance
from streams.core.schedule import local_epoch_ms, next_run
from streams.core.sizing import size_notional


@dataclass(frozen=True, slots=True)
class Output:
    """One output message: logical topic, key and value."""

    topic: str
    key: str | None
    value: OutputModel


@dataclass(slots=True)
class Item:
    """What one level hands to the next: the event and the notes the levels added."""

    kind: str
    account: str | None
    event: Any
    notes: dict[str, Any] = field(default_factory=dict)


Result = tuple[list[Output], list[Item]]

PARTITION_KEY = "@"
"""The key of a level's partition-wide state in its table (the other keys are account ids)."""


def _account_keys(item: Item, forwarded: list[Item]) -> set[str]:
    """The partition key, the item's account and the accounts of the items a level forwarded for it."""
    keys = {PARTITION_KEY}
    if item.account is not None:
        keys.add(item.account)
    keys.update(i.account for i in forwarded if i.account is not None)
    return keys


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


def item_for(topic: str, event: Any) -> Item:
    """Wrap a validated input event as the first level's item."""
    if isinstance(event, Bar):
        return Item("bar", None, event)
    if isinstance(event, Control):
        return Item("control", None if event.account == "*" else event.account, event)
    if isinstance(event, Equity | Fill | Signal):
        kind = {Equity: "equity", Fill: "fill", Signal: "signal"}[type(event)]
        return Item(kind, event.account, event)
    raise TypeError(f"unsupported event on {topic}: {type(event).__name__}")


@dataclass(frozen=True, slots=True)
class AccountView:
    """What Level 1 tells the later levels about an account."""

    trading_state: str
    equity: float | None
    initialized: bool
    vol_scale: float
    day_start: int | None
    day_start_equity: float
    regime: str | None = None
    next_rebalance_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "trading_state": self.trading_state,
            "equity": self.equity,
            "initialized": self.initialized,
            "vol_scale": self.vol_scale,
            "day_start": self.day_start,
            "day_start_equity": self.day_start_equity,
            "regime": self.regime,
            "next_rebalance_at": self.next_rebalance_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccountView:
        return cls(**data)


class _Level:
    """What every per-account level shares: the config, its counters, an account's resolved rules."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stats: Counter[str] = Counter()
        self._rules: dict[str, RiskConfig] = {}

    def rules(self, account: str) -> RiskConfig:
        # Resolved once per account: the levels ask on every bar of every watched symbol.
        rules = self._rules.get(account)
        if rules is None:
            rules = self._rules[account] = self.config.risk_for(account)
        return rules


# --------------------------------------------------------------------------- Level 2: market
@dataclass(slots=True)
class MarketState:
    """Level-2 state of one partition: prices, ATR and the correlation clusters."""

    clusters: ClusterState
    symbols: dict[str, SymbolMarket] = field(default_factory=dict)
    published: dict[str, str] = field(default_factory=dict)
    classifier: bm.ClassifierState = field(default_factory=bm.ClassifierState)
    correlation: float | None = None
    spike: bool = False


class MarketStage:
    """Level 2: prices, Wilder ATR, the cluster map and the budget's market figures, market-wide (on bars)."""

    name = "market"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = MarketState(ClusterState(cluster_params(config)))
        self.stats: Counter[str] = Counter()
        self._atr_period = config.risk.sizing.atr_period

    def process(self, item: Item) -> Result:
        if item.kind == "bar":
            return self._bar(item)
        return [], [item]

    def touched(self, item: Item, forwarded: list[Item]) -> set[str]:
        """Level 2's state is market-wide: its snapshot is whole, never by key."""
        return {PARTITION_KEY}

    def finish(self) -> Result:
        cmap = self.state.clusters.flush()
        return self._map(cmap) if cmap is not None else ([], [])

    def _bar(self, item: Item) -> Result:
        bar: Bar = item.event
        m = self.state.symbols.get(bar.symbol)
        if m is None:
            m = SymbolMarket()
            self.state.symbols[bar.symbol] = m
        if bar.ts <= m.last_ts:
            self.stats["duplicates" if bar.ts == m.last_ts else "out_of_order"] += 1
            return [], []
        update_atr(m, bar.high, bar.low, self._atr_period)
        m.last_ts, m.close = bar.ts, bar.close
        outputs: list[Output] = []
        items: list[Item] = []
        cmap = self.state.clusters.on_bar(bar.symbol, bar.ts, bar.close)
        if cmap is not None:
            outputs, items = self._map(cmap)
        notes: dict[str, Any] = {"atr": m.atr}
        if self.config.budget.enabled:
            market, events = self._budget(bar, cmap)
            outputs += events
            if market:
                notes["market"] = market
        item.notes = notes  # the bar goes on with Level 2's notes only (an item per bar is not rebuilt)
        items.append(item)
        return outputs, items

    def _budget(self, bar: Bar, cmap: ClusterMap | None) -> tuple[dict[str, Any], list[Output]]:
        """The benchmark's regime reading and the correlation-spike edge, as a note for Level 1."""
        config = self.config.budget
        st = self.state
        market: dict[str, Any] = {}
        events: list[tuple[str, dict[str, Any]]] = []
        if bar.symbol == config.benchmark:
            previous = st.classifier.regime
            reading = bm.observe(st.classifier, bar.close, config.classifier)
            if reading is not None:
                market["regime"] = {**reading.to_json(), "previous": previous}
                events.append(("market_regime", {"benchmark": bar.symbol, **market["regime"]}))
        if cmap is not None:
            st.correlation = st.clusters.market_correlation()
            threshold = config.rebalancing_triggers.correlation_spike
            active = st.correlation is not None and st.correlation >= threshold
            if active and not st.spike:
                spike = {"correlation": st.correlation, "threshold": threshold, "as_of": cmap.ts}
                market["correlation_spike"] = spike
                events.append(("correlation_spike", spike))
            st.spike = active
        outputs = [
            Output(
                "events",
                None,
                RiskEvent(event_id=stable_id("evt", kind, bar.ts), kind=kind, account=None, ts=bar.ts, details=details),
            )
            for kind, details in events
        ]
        return market, outputs

    def _map(self, cmap: ClusterMap) -> Result:
        if cmap.assignment == self.state.published:
            return [], []
        self.state.published = dict(cmap.assignment)
        self.stats["cluster_maps"] += 1
        note = Item("cluster_map", None, None, {"version": cmap.version, "assignment": dict(cmap.assignment)})
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
        return [Output("events", None, event)], [note]


# --------------------------------------------------------------------------- Level 1: account
class AccountStage(_Level):
    """Level 1: trading day, loss limits, drawdowns (each state change a Halt); schedule, regime, budget alarms."""

    name = "account"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.accounts: dict[str, l1.AccountState] = {}
        self.budgets: dict[str, bm.AccountBudget] = {}
        self.rebalance_at: dict[str, int] = {}
        self.next_roll: int | None = None
        self.next_rebalance: int | None = None
        self.market_regime: str | None = None
        self.pinned_all: str | None = None
        self.clock = 0
        self.gate = ControlGate()
        self.bar_ts: dict[str, int] = {}  # the last bar of each symbol: one copied twice into the log is dropped

    def process(self, item: Item) -> Result:
        ts = getattr(item.event, "ts", None)
        if isinstance(ts, int) and ts > self.clock:
            self.clock = ts
        if item.kind == "control":
            return self._control(item)
        if item.kind == "bar":
            bar: Bar = item.event
            if bar.ts <= self.bar_ts.get(bar.symbol, -1):
                self.stats["duplicates"] += 1  # sequenced again after a crash; Level 2 dropped the rest
                return [], []
            self.bar_ts[bar.symbol] = bar.ts
            return self._bar(item)
        if item.account is None:
            return [], [item]
        account = item.account
        state = self._account(account)
        rules = self.rules(account)
        if item.kind == "equity":
            ev: Equity = item.event
            if state.last_equity_ts is not None and ev.ts < state.last_equity_ts:
                self.stats["out_of_order"] += 1
                return [], []
        ts = item.event.ts
        outputs, flatten = self._changes(account, l1.roll_day(state, ts, rules.account), rules)
        if item.kind == "equity":
            ev = item.event
            more, more_flatten = self._changes(
                account, l1.apply_equity(state, ev.ts, ev.equity, ev.balance, rules.account), rules
            )
            outputs += more
            flatten += more_flatten
        self._plan(account, ts)
        if self.config.budget.enabled:
            outputs += self._assess(account, ts, item.notes)[0]
        self._schedule(state)
        item.notes["account"] = self.view(account).to_json()
        if flatten:
            item.notes["flatten"] = flatten
        return outputs, [item]

    def touched(self, item: Item, forwarded: list[Item]) -> set[str]:
        """The keys `process(item)` may have changed: the account, or every account a bar or `*` reached."""
        return _account_keys(item, forwarded)

    def _account(self, account: str) -> l1.AccountState:
        state = self.accounts.get(account)
        if state is None:
            state = l1.AccountState()
            self.accounts[account] = state
        return state

    def _control(self, item: Item) -> Result:
        ctl: Control = item.event
        problem = params_problem(ctl.command.value, ctl.params, self.config.budget.regime_allocations)
        if problem is not None:
            self.stats["controls_invalid"] += 1
            return _bad_control(ctl, problem), []
        refusal = self.gate.admit(ctl.nonce, ctl.ts, ctl.expires_at, self.clock)
        if refusal is not None:
            self.stats["controls_refused"] += 1
            return _refused_control(ctl, refusal), []
        targets = sorted(self.accounts) if ctl.account == "*" else [ctl.account]
        command = ctl.command.value
        if command == "SET_REGIME" and ctl.account == "*":
            regime = ctl.params["regime"]
            self.pinned_all = None if regime == AUTO_REGIME else regime
            for budget in self.budgets.values():
                budget.pinned = None  # the latest control wins: `*` replaces every account's own pin
        outputs: list[Output] = []
        items: list[Item] = []
        for account in targets:
            state = self._account(account)
            rules = self.rules(account)
            changes: list[l1.StateChange] = []
            notes: dict[str, Any] = {}
            if command == "HALT":
                changes = l1.force_state(state, "HALTED", "operator_halt", ctl.ts, rules.account)
            elif command == "RESUME":
                changes = l1.force_state(state, "ACTIVE", "operator_resume", ctl.ts, rules.account)
            elif command == "REBALANCE":
                notes["rebalance"] = _control_run(account, ctl)
            elif command == "SET_REGIME" and ctl.account != "*":
                regime = ctl.params["regime"]
                self._budget(account).pinned = None if regime == AUTO_REGIME else regime
            more, flatten = self._changes(account, changes, rules)
            outputs += more
            self._plan(account, ctl.ts)
            if self.config.budget.enabled:
                outputs += self._assess(account, ctl.ts, notes)[0]
            notes["account"] = self.view(account).to_json()
            if flatten:
                notes["flatten"] = flatten
            items.append(Item("control", account, ctl, notes))
            self._schedule(state)
        self.stats["controls_applied"] += 1
        event = RiskEvent(
            event_id=stable_id("evt", "control", ctl.nonce),
            kind="control_applied",
            account=None if ctl.account == "*" else ctl.account,
            ts=ctl.ts,
            details={
                "command": command,
                "issued_by": ctl.issued_by,
                "nonce": ctl.nonce,
                "accounts": targets,
                "params": ctl.params,
            },
        )
        return [*outputs, Output("events", event.account, event)], items

    def fail_closed(self, account: str, ts: int) -> Result:
        """HALTED with reason `internal_error` after a level failed on the account's item (SPEC §8).

        Lifted like any HALTED: by the next trading-day reset or a signed RESUME; a SHUTDOWN or a
        HALTED account stays as it is. The account item carries the flatten to Levels 3 and 4.
        """
        state = self._account(account)
        if l1.SEVERITY[state.trading_state] >= l1.SEVERITY["HALTED"]:
            return [], []
        rules = self.rules(account)
        changes = l1.force_state(state, "HALTED", "internal_error", ts, rules.account)
        outputs, flatten = self._changes(account, changes, rules)
        notes: dict[str, Any] = {"account": self.view(account).to_json()}
        if flatten:
            notes["flatten"] = flatten
        self._schedule(state)
        return outputs, [Item("account", account, None, notes)]

    def view(self, account: str) -> AccountView:
        state = self.accounts[account]
        rules = self.rules(account)
        equity = state.equity if state.equity is not None else rules.account.initial_balance
        budget = self.budgets.get(account)
        return AccountView(
            trading_state=state.trading_state,
            equity=equity,
            initialized=state.initialized,
            vol_scale=l1.vol_scale(state, rules.portfolio.vol_target),
            day_start=state.day_start,
            day_start_equity=state.day_start_equity,
            regime=budget.regime if budget is not None and self.config.budget.enabled else None,
            next_rebalance_at=self.rebalance_at.get(account),
        )

    def _schedule(self, state: l1.AccountState) -> None:
        if state.next_reset is not None and (self.next_roll is None or state.next_reset < self.next_roll):
            self.next_roll = state.next_reset

    def _budget(self, account: str) -> bm.AccountBudget:
        budget = self.budgets.get(account)
        if budget is None:
            budget = bm.AccountBudget()
            self.budgets[account] = budget
        return budget

    def _plan(self, account: str, ts: int) -> None:
        """Give an account its first scheduled rebalance (the first run after `ts`) when runs are on."""
        policy = self.config.rebalance
        if policy.enabled and account not in self.rebalance_at:
            self._next_run(account, first_run(ts, policy))

    def _next_run(self, account: str, at: int) -> None:
        self.rebalance_at[account] = at
        if self.next_rebalance is None or at < self.next_rebalance:
            self.next_rebalance = at

    def _assess(
        self, account: str, ts: int, notes: dict[str, Any], spike: dict[str, Any] | None = None
    ) -> tuple[list[Output], bool]:
        """Regime in force and vol breach of one account: a recommendation on each trigger's edge.

        Returns the recommendations and whether the account's budget state changed (the worker stores
        an account's state at a bar only when an item for it goes on).
        """
        config = self.config.budget
        budget = self._budget(account)
        state = self.accounts[account]
        was = (budget.regime, budget.source, budget.vol_breach, budget.vol_day)
        fired: list[tuple[str, dict[str, Any]]] = []
        regime, source = bm.regime_in_force(budget.pinned, self.pinned_all, self.market_regime, config.initial_regime)
        changed = regime != budget.regime
        previous = budget.regime
        budget.regime, budget.source = regime, source
        if changed and previous is not None and config.rebalancing_triggers.regime_change:
            before = bm.budget_cap(config, previous, state.equity)
            after = bm.budget_cap(config, regime, state.equity)
            details: dict[str, Any] = {
                "previous_regime": previous,
                "source": source,
                "previous_budget_gross_cap": before,
            }
            fired.append((bm.REGIME_CHANGE, {**details, "recommended": {"action": "rebalance", "gross_cap": after}}))
        if budget.vol_day != state.day_start:  # day closes only change when the day rolls
            budget.vol = bm.realized_vol(state.day_closes, config.vol_window, config.vol_min_periods)
            budget.vol_day = state.day_start
        limit = bm.vol_limit(config, regime)
        breach = budget.vol is not None and budget.vol >= limit
        if breach and not budget.vol_breach and budget.vol is not None:
            target = config.regime_allocations[regime].vol_target
            recommended: dict[str, Any] = {"action": "reduce_exposure", "scale": target / budget.vol}
            details = {"observed": budget.vol, "threshold": limit, "vol_target": target, "recommended": recommended}
            fired.append((bm.VOL_BREACH, details))
        budget.vol_breach = breach
        if spike is not None:
            recommended = {"action": "reduce_exposure", "gross_cap": bm.budget_cap(config, regime, state.equity)}
            details = {"observed": spike["correlation"], "threshold": spike["threshold"], "as_of": spike["as_of"]}
            fired.append((bm.CORRELATION_SPIKE, {**details, "recommended": recommended}))
        outputs = _recommend(self.config, account, ts, fired, notes, state.equity, regime, budget.recommendations)
        return outputs, bool(fired) or was != (budget.regime, budget.source, budget.vol_breach, budget.vol_day)

    def _bar(self, item: Item) -> Result:
        """Day rolls before the bar; scheduled runs and budget changes of each account after it."""
        ts = item.event.ts
        outputs: list[Output] = []
        before: list[Item] = []
        after: dict[str, dict[str, Any]] = {}
        if self.next_roll is not None and ts >= self.next_roll:
            self.next_roll = None
            for account in sorted(self.accounts):
                state = self.accounts[account]
                if state.next_reset is not None and ts >= state.next_reset:
                    rules = self.rules(account)
                    more, flatten = self._changes(account, l1.roll_day(state, ts, rules.account), rules)
                    outputs += more
                    notes: dict[str, Any] = {}
                    if self.config.budget.enabled:
                        outputs += self._assess(account, ts, notes)[0]
                    notes["account"] = self.view(account).to_json()
                    if flatten:
                        notes["flatten"] = flatten
                    before.append(Item("account", account, None, notes))
                self._schedule(state)
        if self.next_rebalance is not None and ts >= self.next_rebalance:
            self._due(ts, after)
        market = item.notes.get("market")
        if market is not None and self.config.budget.enabled:
            if "regime" in market:
                self.market_regime = market["regime"]["regime"]
            spike = market.get("correlation_spike")
            for account in sorted(self.accounts):
                notes = after.get(account, {})
                more, changed = self._assess(account, ts, notes, spike)
                outputs += more
                if changed or notes:
                    after[account] = notes
        items = [*before, item]
        for account in sorted(after):
            notes = after[account]
            notes["account"] = self.view(account).to_json()
            items.append(Item("account", account, None, notes))
        return outputs, items

    def _due(self, ts: int, after: dict[str, dict[str, Any]]) -> None:
        """Scheduled runs whose time has come: one run each, then the next run strictly after this bar."""
        policy = self.config.rebalance
        self.next_rebalance = None
        for account in sorted(self.rebalance_at):
            due = self.rebalance_at[account]
            if ts >= due:
                run_id = stable_id("run", account, "schedule", due)
                after.setdefault(account, {})["rebalance"] = {
                    "trigger": "schedule",
                    "run_id": run_id,
                    "ts": ts,
                    "scheduled_at": due,
                }
                self.stats["rebalance_scheduled"] += 1
                due = next_run(ts, policy)  # runs missed while no bar came are one run, not a burst
            self._next_run(account, due)

    def _changes(
        self, account: str, changes: list[l1.StateChange], rules: RiskConfig
    ) -> tuple[list[Output], list[list[Any]]]:
        outputs: list[Output] = []
        flatten: list[list[Any]] = []
        for change in changes:
            halt_id = stable_id("halt", account, change.ts, change.previous_state, change.state, change.reason)
            halt = Halt(
                halt_id=halt_id,
                account=account,
                ts=change.ts,
                state=change.state,
                previous_state=change.previous_state,
                reason=change.reason,
                until=change.until,
                facts=HaltFacts(**change.facts),
            )
            self.stats[f"halt_{change.state}"] += 1
            outputs.append(Output("halts", account, halt))
            if change.state in ("HALTED", "SHUTDOWN"):
                flatten.append([halt_id, change.state, change.ts])
        return outputs, flatten


def first_run(ts: int, policy: RebalancePolicy) -> int:
    """An account's first scheduled run: the first after `ts`, and not before `start_date` (local midnight)."""
    after = ts
    if policy.start_date is not None:
        start = local_epoch_ms(policy.start_date, time(0, 0), ZoneInfo(policy.timezone))
        after = max(after, start - 1)
    return next_run(after, policy)


def _control_run(account: str, ctl: Control) -> dict[str, Any]:
    """The `rebalance` note of a REBALANCE control (run id from the nonce, as before schedules existed)."""
    run: dict[str, Any] = {
        "trigger": "control",
        "run_id": stable_id("run", account, ctl.nonce),
        "ts": ctl.ts,
        "preview": bool(ctl.params.get("preview", False)),
    }
    if isinstance(ctl.params.get("targets"), dict):
        run["targets"] = {str(k): float(v) for k, v in sorted(ctl.params["targets"].items())}
    return run


def _recommend(
    config: Config,
    account: str,
    ts: int,
    fired: list[tuple[str, dict[str, Any]]],
    notes: dict[str, Any],
    equity: float | None,
    regime: str | None,
    history: list[dict[str, Any]],
) -> list[Output]:
    """One `budget_recommendation` per fired trigger; with auto_rebalance, a budget run on this item."""
    if not fired:
        return []
    budget = config.budget
    run = notes.get("rebalance")
    if budget.auto_rebalance and run is None:
        names = [trigger for trigger, _ in fired]
        run = {"trigger": "budget", "run_id": stable_id("run", account, "budget", ts, *names), "ts": ts}
        run["triggers"] = names
        notes["rebalance"] = run
    outputs: list[Output] = []
    for trigger, details in fired:
        record = {
            "trigger": trigger,
            "regime": regime,
            "equity": equity,
            "budget_gross_cap": bm.budget_cap(budget, regime, equity),
            **details,
            "auto_rebalance": budget.auto_rebalance,
            "run_id": run["run_id"] if budget.auto_rebalance and run is not None else None,
        }
        event_id = stable_id("evt", "budget_recommendation", account, trigger, ts, regime)
        event = RiskEvent(event_id=event_id, kind="budget_recommendation", account=account, ts=ts, details=record)
        bm.remember(history, {"event_id": event_id, "ts": ts, **record})
        outputs.append(Output("events", account, event))
    return outputs


def _rejected(ctl: Control, kind: str, error: str, letter_error: str) -> list[Output]:
    """A control that changes nothing: a dead letter and an event of `kind` saying why (fail closed)."""
    account = None if ctl.account == "*" else ctl.account
    event = RiskEvent(
        event_id=stable_id("evt", kind, ctl.account, ctl.nonce, error),
        kind=kind,
        account=account,
        ts=ctl.ts,
        details={"command": ctl.command.value, "issued_by": ctl.issued_by, "nonce": ctl.nonce, "error": error},
    )
    letter = DeadLetter(
        source=DeadLetterSource(topic="control"),
        key=ctl.account,
        raw=orjson.dumps(ctl.model_dump(mode="json")).decode(),
        error=letter_error,
        ts=format_ts(ctl.ts),
    )
    return [Output("deadletter", ctl.account, letter), Output("events", account, event)]


def _refused_control(ctl: Control, refusal: str) -> list[Output]:
    """A control refused for security (expired, replayed): a `security` event and a dead letter."""
    return _rejected(ctl, "security", refusal, f"security: {refusal}")


def _bad_control(ctl: Control, problem: str) -> list[Output]:
    """A signed control whose parameters cannot be acted on: a `control_rejected` event and a dead letter."""
    return _rejected(ctl, "control_rejected", problem, f"bad control: {problem}")


# --------------------------------------------------------------------------- Level 3: symbol
@dataclass(slots=True)
class SymbolBook:
    """Level-3 state of one account: targets, stops and vetoes, filled positions, the ledger."""

    symbols: dict[str, l3.SymbolState] = field(default_factory=dict)
    filled: dict[str, Position] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=Ledger)
    seen_fills: set[str] = field(default_factory=set)
    seen_signals: set[str] = field(default_factory=set)
    last_signal_ts: int | None = None
    view: AccountView | None = None
    drift_alarm: bool = False
    recommendations: list[dict[str, Any]] = field(default_factory=list)


_GATED = ("HALTED", "SHUTDOWN", "REDUCING")


class SymbolStage(_Level):
    """Level 3: targets (sizing, vol scale, symbol cap, signal change), stops, re-entry veto, cadence, drift."""

    name = "symbol"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.books: dict[str, SymbolBook] = {}
        self.watchers: dict[str, set[str]] = {}
        self.closes: dict[str, float] = {}
        self.marks: dict[str, tuple[float, float | None]] = {}  # last close and ATR of every symbol (Level 2's)

    def book(self, account: str) -> SymbolBook:
        book = self.books.get(account)
        if book is None:
            book = SymbolBook()
            self.books[account] = book
        return book

    def process(self, item: Item) -> Result:
        if item.kind == "bar":
            return self._bar(item)
        if item.account is None:
            return [], [item]
        book = self.book(item.account)
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
            for state in book.symbols.values():
                l3.clear_veto(state)  # every rebalance run clears re-entry vetoes (SPEC §6.6)
        return outputs, items

    def touched(self, item: Item, forwarded: list[Item]) -> set[str]:
        """The keys `process(item)` may have changed; a bar marks the trailing peaks of every watcher."""
        keys = _account_keys(item, forwarded)
        if item.kind == "bar":
            keys.update(item.notes.get("accounts", {}))
            keys.update(self.watchers.get(item.event.symbol, ()))
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
        ts: int = item.event.ts
        return _recommend(
            self.config, item.account, ts, fired, item.notes, view.equity, view.regime, book.recommendations
        )

    def _watch(self, account: str, symbol: str) -> None:
        self.watchers.setdefault(symbol, set()).add(account)

    def _fill(self, item: Item, book: SymbolBook) -> Result:
        fill: Fill = item.event
        if fill.fill_id in book.seen_fills:
            self.stats["duplicates"] += 1
            return [], []
        book.seen_fills.add(fill.fill_id)
        position = book.filled.get(fill.symbol)
        if position is None:
            position = Position()
            book.filled[fill.symbol] = position
        apply_fill(position, book.ledger, fill.signed_qty, fill.price, fill.fee, None)
        self._watch(fill.account, fill.symbol)
        return [], [item]

    def _signal(self, item: Item, book: SymbolBook) -> Result:
        sig: Signal = item.event
        if sig.signal_id in book.seen_signals:
            self.stats["duplicates"] += 1
            return [], []
        if book.last_signal_ts is not None and sig.ts < book.last_signal_ts:
            self.stats["out_of_order"] += 1
            return [], []
        book.seen_signals.add(sig.signal_id)
        book.last_signal_ts = sig.ts
        state = book.symbols.get(sig.symbol)
        if state is None:
            state = l3.SymbolState()
            book.symbols[sig.symbol] = state
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
        capped = _capped_target(target, rules, equity, sig.symbol)
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
        bar: Bar = item.event
        self.marks[bar.symbol] = (bar.close, item.notes.get("atr"))
        if self.config.budget.enabled and bar.symbol in self.watchers:
            self.closes[bar.symbol] = bar.close
        work: dict[str, dict[str, Any]] = {}
        for account in sorted(self.watchers.get(bar.symbol, ())):
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
        rules = self.rules(account)
        if position is not None:
            levels = rules.stops.for_symbol(sym)
            if position.qty != 0 and l3.has_stops(levels):
                hit = l3.check_stops(position, bar.open, bar.high, bar.low, levels)
                l3.mark_extremes(position, bar.high, bar.low)
                if hit is not None:
                    if state is None:
                        state = l3.SymbolState()
                        book.symbols[sym] = state
                    l3.stop_out(state, rules.stops)
                    state.last_eval = bar.ts
                    self.stats[hit.origin] += 1
                    return {"stop": [hit.origin, hit.price]}
            else:
                l3.mark_extremes(position, bar.high, bar.low)
        if state is None:
            return {}
        if state.vetoed:
            l3.tick_cooldown(state, rules.stops)
            return {}
        if state.committed is None or not self.config.policy.rebalance_triggers.on_cadence_tick:
            return {}
        due = state.last_eval is None or bar.ts - state.last_eval >= rules.per_symbol.rebalance_cadence
        if not due:
            return {"wait": state.committed}
        state.last_eval = bar.ts
        return {"cadence": state.committed}


def _carry(item: Item) -> Item | None:
    """What of a dropped item later levels still need: its flatten and run notes, as an account item."""
    kept: dict[str, Any] = {key: item.notes[key] for key in ("account", "flatten", "rebalance") if key in item.notes}
    if "flatten" not in kept and "rebalance" not in kept:
        return None
    return Item("account", item.account, None, kept)


def _capped_target(target: float, rules: RiskConfig, equity: float, symbol: str) -> float:
    for limit in (rules.per_symbol.cap_for(symbol), _weight_cap(rules, equity)):
        if limit is not None and abs(target) > limit:
            target = math.copysign(max(limit, 0.0), target)
    return target


def _weight_cap(rules: RiskConfig, equity: float) -> float | None:
    pct = rules.per_symbol.max_weight_pct
    return pct * equity if pct is not None else None


# --------------------------------------------------------------------------- Level 4: portfolio
@dataclass(slots=True)
class PortfolioBook:
    """Level-4 state of one account: projected positions, the day's entry quota, the account view."""

    positions: dict[str, Position] = field(default_factory=dict)
    quota_used: float = 0.0
    quota_day: int | None = None
    view: AccountView | None = None
    last_run: dict[str, Any] | None = None


@dataclass(slots=True)
class PortfolioMarket:
    """Level-4 state of one partition: marks, ATR and the cluster map it caps by."""

    closes: dict[str, float] = field(default_factory=dict)
    atr: dict[str, float] = field(default_factory=dict)
    clusters: dict[str, str] = field(default_factory=dict)


class PortfolioStage(_Level):
    """Level 4 and the decision kernel: group, cluster, gross and net caps; every decision."""

    name = "portfolio"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.version = config.config_version
        self.shadow = config.mode == "shadow"
        self.books: dict[str, PortfolioBook] = {}
        self.market = PortfolioMarket()
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
            fill: Fill = item.event
            position = self._position(book, fill.symbol)
            apply_fill(position, Ledger(), fill.signed_qty, fill.price, fill.fee, fill.decision_id)
            if fill.symbol not in self.market.closes:
                position.last_price = fill.price
        elif item.kind == "signal":
            outputs += self._signal(account, book, item)
        elif item.kind == "control":
            self.stats[f"control_{item.event.command.value.lower()}"] += 1
        run = item.notes.get("rebalance")
        if run is not None:
            outputs += self._rebalance(account, book, run)
        return outputs, []

    def touched(self, item: Item, forwarded: list[Item]) -> set[str]:
        """The keys `process(item)` may have changed: the account, or every account a bar works for."""
        keys = _account_keys(item, forwarded)
        if item.kind == "bar":
            keys.update(item.notes.get("accounts", {}))
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
                holdings[sym] = Holding(qty, mark)
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

    def _position(self, book: PortfolioBook, sym: str) -> Position:
        position = book.positions.get(sym)
        if position is None:
            position = Position()
            book.positions[sym] = position
        return position

    def _mark(self, sym: str, position: Position) -> float:
        close = self.market.closes.get(sym)
        return close if close is not None else position.last_price

    def _bar(self, item: Item) -> list[Output]:
        bar: Bar = item.event
        self.market.closes[bar.symbol] = bar.close
        if item.notes.get("atr") is not None:
            self.market.atr[bar.symbol] = item.notes["atr"]
        outputs: list[Output] = []
        source = None
        for account, note in item.notes.get("accounts", {}).items():
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
            base = self._trade_context(account, book, bar.symbol, bar.ts, "cadence", bar.close, note["cadence"], None)
            if base is None:
                continue
            cadence = replace(base, check_signal_change=False)
            outcome = evaluate(cadence)
            if outcome.action == "NOOP":
                self.stats["noop_band"] += 1
                continue
            outputs += self._publish(account, book, bar.symbol, bar.ts, "cadence", source, cadence, outcome)
        return outputs

    def _outside_band(self, account: str, book: PortfolioBook, sym: str, target: float, price: float, ts: int) -> bool:
        position = book.positions.get(sym)
        value = position.projected(ts) * price if position is not None else 0.0
        lo, hi = band_of(target, self.rules(account).per_symbol.band_pct)
        return not lo <= value <= hi

    def _flatten(self, account: str, book: PortfolioBook, ts: int, halt_id: str, state: str) -> list[Output]:
        outputs: list[Output] = []
        for sym in sorted(book.positions):
            if book.positions[sym].projected(ts) == 0:
                continue
            ctx = self._exit_context(book, sym, ts, "flatten", f"flatten_{state.lower()}", "account")
            outputs += self._publish(account, book, sym, ts, "flatten", halt_id, ctx, evaluate(ctx))
        return outputs

    def _signal(self, account: str, book: PortfolioBook, item: Item) -> list[Output]:
        sig: Signal = item.event
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

    def _values(self, book: PortfolioBook, ts: int, skip: str) -> list[tuple[str, float]]:
        values = []
        for sym, position in book.positions.items():
            if sym == skip:
                continue
            qty = position.projected(ts)
            if qty != 0:
                values.append((sym, qty * self._mark(sym, position)))
        return values

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
    ) -> TradeContext | None:
        view = book.view
        if view is None or view.equity is None:
            return None
        equity = view.equity
        rules = self.rules(account)
        position = book.positions.get(sym)
        filled = position.qty if position is not None else 0.0
        pending = position.pending_qty(ts) if position is not None else 0.0
        values = self._values(book, ts, sym)
        values.append((sym, (filled + pending) * price))
        group = rules.groups.group_of(sym)
        cluster = self.cluster_of(sym)
        exp = exposures(values, rules.groups.group_of, self.cluster_of, group, cluster)
        conc = rules.concentration
        quota_pct = rules.account.daily_entry_quota_pct
        quota = None if quota_pct is None else max(quota_pct * view.day_start_equity - book.quota_used, 0.0)
        triggers = self.config.policy.rebalance_triggers
        state = view.trading_state if (view.initialized or equity > 0) else "UNKNOWN"
        weight_cap = _weight_cap(rules, equity)
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
            check_signal_change=triggers.on_signal_change,
            signal_change_threshold=triggers.signal_change_threshold,
            vetoed=vetoed,
            symbol_cap=rules.per_symbol.cap_for(sym),
            weight_cap=weight_cap,
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
        )

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
            add_pending(self._position(book, sym), did, signed, ts + rules.pending_ttl)
            book.quota_used += outcome.opening_notional
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
