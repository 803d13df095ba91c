"""Level 1, the account stage: trading day, loss limits, drawdowns; schedule, regime, budget alarms.

Each change of trading state is a Halt; HALTED and SHUTDOWN carry a `flatten` note to Levels 3 and 4.
Level 1 also keeps each account's rebalance schedule (`next_rebalance_at`), its regime and the budget
triggers it can see (regime change, correlation spike from Level 2, vol breach of its equity). A
level that starts a run puts a `rebalance` note on the account's item: Level 3 clears the account's
re-entry vetoes and Level 4 plans and runs it, whatever started it (control, schedule, budget).

Its rules sit beside it: `rules.py` (the account guard), `controls.py` (signed controls, expiry,
nonces, parameters), `schedule.py` (run dates); `snapshot.py` stores its state per account.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas.config import Config, RiskConfig
from schemas.inputs import Bar, Control
from schemas.outputs import DeadLetter, DeadLetterSource, Halt, HaltFacts, RiskEvent
from schemas.timefmt import format_ts
from streams.core import budget as bm
from streams.core.ids import stable_id
from streams.core.items import AccountView, Item, Level, Output, Result, account_keys
from streams.core.levels.account import rules as l1
from streams.core.levels.account.controls import AUTO_REGIME, ControlGate, params_problem
from streams.core.levels.account.schedule import first_run, next_run


class AccountStage(Level):
    """Level 1: trading day, loss limits, drawdowns (each state change a Halt); schedule, regime, budget alarms.

    It changes its state in place (why: `streams.core.items.Stage`); the pure decisions live in
    `rules.roll_day`, `rules.apply_equity`, `rules.force_state`, `schedule.next_run`.
    """

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
        self._budget_on = config.budget.enabled
        self.bar_ts: dict[str, int] = {}  # the last bar of each symbol: one copied twice into the log is dropped

    def process(self, item: Item) -> Result:
        if item.kind == "bar":
            bar: Bar = item.event  # type: ignore[assignment]  # a `bar` item carries a Bar (`items.item_for`)
            ts = bar.ts
            if ts > self.clock:
                self.clock = ts
            if ts <= self.bar_ts.get(bar.symbol, -1):
                self.stats["duplicates"] += 1  # sequenced again after a crash; Level 2 dropped the rest
                return [], []
            self.bar_ts[bar.symbol] = ts
            if (
                (self.next_roll is None or ts < self.next_roll)
                and (self.next_rebalance is None or ts < self.next_rebalance)
                and not (self._budget_on and "market" in item.notes)
            ):
                return [], [item]  # no day roll, no scheduled run, no market news: `_bar` would do nothing
            return self._bar(item)
        event_ts = getattr(item.event, "ts", None)
        if isinstance(event_ts, int) and event_ts > self.clock:
            self.clock = event_ts
        if item.kind == "control":
            return self._control(item)
        if item.account is None:
            return [], [item]
        account = item.account
        state = self._account(account)
        rules = self.rules(account)
        if item.kind == "equity":
            ev = item.equity
            if state.last_equity_ts is not None and ev.ts < state.last_equity_ts:
                self.stats["out_of_order"] += 1
                return [], []
        ts = item.ts
        outputs, flatten = self._changes(account, l1.roll_day(state, ts, rules.account), rules)
        if item.kind == "equity":
            ev = item.equity
            more, more_flatten = self._changes(
                account, l1.apply_equity(state, ev.ts, ev.equity, ev.balance, rules.account), rules
            )
            if ev.cash is not None:
                state.cash = ev.cash
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
        return account_keys(item, forwarded)

    def _account(self, account: str) -> l1.AccountState:
        state = self.accounts.get(account)
        if state is None:
            state = l1.AccountState()
            self.accounts[account] = state
        return state

    def _control(self, item: Item) -> Result:
        ctl = item.control
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
                changes = l1.force_state(state, l1.HALTED, "operator_halt", ctl.ts, rules.account)
            elif command == "RESUME":
                changes = l1.force_state(state, l1.ACTIVE, "operator_resume", ctl.ts, rules.account)
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
        if l1.SEVERITY[state.trading_state] >= l1.SEVERITY[l1.HALTED]:
            return [], []
        rules = self.rules(account)
        changes = l1.force_state(state, l1.HALTED, "internal_error", ts, rules.account)
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
            cash=state.cash,
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
        outputs = bm.recommend(self.config, account, ts, fired, notes, state.equity, regime, budget.recommendations)
        return outputs, bool(fired) or was != (budget.regime, budget.source, budget.vol_breach, budget.vol_day)

    def _bar(self, item: Item) -> Result:
        """Day rolls before the bar; scheduled runs and budget changes of each account after it."""
        ts = item.ts
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
            if change.state in (l1.HALTED, l1.SHUTDOWN):
                flatten.append([halt_id, change.state, change.ts])
        return outputs, flatten


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
