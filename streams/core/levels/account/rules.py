"""Level 1 — the account guard (seed 000 §Level 1, seed 003 IntradayDrawdownMonitor, SPEC §6.1).

Trading day rolls at `reset_time` in `timezone`; daily loss (`of`/`basis`), total loss, intraday
and trailing drawdown move the account through ACTIVE / WARNING / REDUCING / HALTED / SHUTDOWN.
Every change of state is returned as a `StateChange` for the shell to publish as a Halt.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from schemas.config import AccountRules, VolTarget
from schemas.outputs import TradingState
from streams.core.decimals import at_least, at_most

ACTIVE, WARNING, REDUCING, HALTED, SHUTDOWN = (
    TradingState.ACTIVE,
    TradingState.WARNING,
    TradingState.REDUCING,
    TradingState.HALTED,
    TradingState.SHUTDOWN,
)
SEVERITY = {ACTIVE: 0, WARNING: 1, REDUCING: 2, HALTED: 3, SHUTDOWN: 4}


@dataclass(slots=True)
class AccountState:
    """Level-1 state of one account."""

    initialized: bool = False
    trading_state: TradingState = ACTIVE
    day_start: int | None = None
    next_reset: int | None = None
    day_start_equity: float = 0.0
    day_start_balance: float = 0.0
    peak_equity: float = 0.0
    equity: float | None = None
    balance: float | None = None
    initial_balance: float = 0.0
    last_equity_ts: int | None = None
    trailing_mark: float = 0.0
    day_closes: list[float] = field(default_factory=list)
    cash: float | None = None  # the latest `cash` of an equity event (buying power)


@dataclass(frozen=True, slots=True)
class StateChange:
    """A trading-state transition with the figures that caused it."""

    ts: int
    state: TradingState
    previous_state: TradingState
    reason: str
    until: int | None
    facts: dict[str, float]


@lru_cache(maxsize=4096)
def _day_bounds_cached(zone: str, reset_minutes: int, local_date_ordinal: int) -> tuple[int, int]:
    tz = ZoneInfo(zone)
    day = datetime.fromordinal(local_date_ordinal).date()
    at = time(reset_minutes // 60, reset_minutes % 60)
    start = datetime.combine(day, at, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), at, tzinfo=tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def trading_day_bounds(ts: int, rules: AccountRules) -> tuple[int, int]:
    """[start, end) in epoch ms of the trading day that contains `ts`."""
    tz = ZoneInfo(rules.timezone)
    local = datetime.fromtimestamp(ts / 1000, tz)
    reset = rules.reset_minutes
    ordinal = local.date().toordinal()
    start, end = _day_bounds_cached(rules.timezone, reset, ordinal)
    if ts < start:
        start, end = _day_bounds_cached(rules.timezone, reset, ordinal - 1)
    elif ts >= end:
        start, end = _day_bounds_cached(rules.timezone, reset, ordinal + 1)
    return start, end


def figures(state: AccountState, rules: AccountRules) -> dict[str, float]:
    """The Halt facts of SPEC §4 for the current state."""
    equity = state.equity if state.equity is not None else 0.0
    base = daily_base(state, rules)
    return {
        "equity": equity,
        "day_start_equity": state.day_start_equity,
        "day_start_balance": state.day_start_balance,
        "peak_equity": state.peak_equity,
        "initial_balance": state.initial_balance,
        "daily_loss_pct": (base - equity) / base if base > 0 else 0.0,
        "intraday_drawdown_pct": (state.peak_equity - equity) / state.peak_equity if state.peak_equity > 0 else 0.0,
        "total_loss_pct": (state.initial_balance - equity) / state.initial_balance
        if state.initial_balance > 0
        else 0.0,
    }


def daily_base(state: AccountState, rules: AccountRules) -> float:
    """The equity the daily loss is measured from (`daily_loss.basis`)."""
    basis = rules.daily_loss.basis if rules.daily_loss is not None else "equity"
    if basis == "balance":
        return state.day_start_balance
    if basis == "max":
        return max(state.day_start_balance, state.day_start_equity)
    return state.day_start_equity


def _transition(
    state: AccountState, new_state: TradingState, reason: str, ts: int, rules: AccountRules
) -> StateChange | None:
    if new_state == state.trading_state:
        return None
    previous = state.trading_state
    state.trading_state = new_state
    until = state.next_reset if new_state == HALTED else None
    return StateChange(ts, new_state, previous, reason, until, figures(state, rules))


def roll_day(state: AccountState, ts: int, rules: AccountRules) -> list[StateChange]:
    """Roll the trading day when `ts` is at or past the next reset (first event after it)."""
    if state.next_reset is None:
        state.day_start, state.next_reset = trading_day_bounds(ts, rules)
        return []
    if ts < state.next_reset:
        return []
    state.day_start, state.next_reset = trading_day_bounds(ts, rules)
    changes: list[StateChange] = []
    if state.initialized and state.equity is not None:
        close = state.equity
        state.day_closes.append(close)
        del state.day_closes[:-64]
        if rules.trailing_drawdown is not None and rules.trailing_drawdown.mode == "end_of_day":
            state.trailing_mark = max(state.trailing_mark, close)
        state.day_start_equity = close
        state.day_start_balance = state.balance if state.balance is not None else close
        state.peak_equity = close
    if state.trading_state in (HALTED, WARNING, REDUCING):
        change = _transition(state, ACTIVE, "day_reset", ts, rules)
        if change is not None:
            changes.append(change)
    return changes


def target_state(state: AccountState, rules: AccountRules) -> tuple[TradingState, str]:
    """The most severe state the rules call for at the current figures."""
    equity = state.equity if state.equity is not None else 0.0
    initial = state.initial_balance
    if rules.max_total_loss_pct is not None and at_most(equity, initial * (1 - rules.max_total_loss_pct)):
        return SHUTDOWN, "max_total_loss"
    trailing = rules.trailing_drawdown
    if trailing is not None:
        floor = state.trailing_mark - trailing.pct * initial
        if trailing.lock_at_initial:
            floor = min(floor, initial)
        if at_most(equity, floor):
            return SHUTDOWN, "trailing_drawdown"
    if rules.daily_loss is not None:
        base = daily_base(state, rules)
        scale = base if rules.daily_loss.of == "day_start" else initial
        if at_most(equity, base - rules.daily_loss.limit_pct * scale):
            return HALTED, "daily_loss"
    if rules.intraday_drawdown is not None and state.peak_equity > 0:
        drawdown = (state.peak_equity - equity) / state.peak_equity
        if at_least(drawdown, rules.intraday_drawdown.halt_pct):
            return HALTED, "intraday_drawdown"
        if at_least(drawdown, rules.intraday_drawdown.warn_pct):
            return (REDUCING if rules.on_warning == "reduce" else WARNING), "intraday_drawdown_warning"
    return ACTIVE, "recovered"


def apply_equity(
    state: AccountState, ts: int, equity: float, balance: float | None, rules: AccountRules
) -> list[StateChange]:
    """Apply an equity report: update marks and move the trading state (never below a halt)."""
    if not state.initialized:
        state.initialized = True
        state.initial_balance = (
            rules.initial_balance if rules.initial_balance is not None else (balance if balance is not None else equity)
        )
        state.day_start_equity = equity
        state.day_start_balance = balance if balance is not None else equity
        state.peak_equity = equity
        state.trailing_mark = max(state.initial_balance, equity)
    state.equity = equity
    if balance is not None:
        state.balance = balance
    state.last_equity_ts = ts
    state.peak_equity = max(state.peak_equity, equity)
    trailing = rules.trailing_drawdown
    if trailing is not None and trailing.mode == "intraday":
        state.trailing_mark = max(state.trailing_mark, equity)
    if state.trading_state == SHUTDOWN:
        return []
    wanted, reason = target_state(state, rules)
    if state.trading_state == HALTED and SEVERITY[wanted] < SEVERITY[SHUTDOWN]:
        return []
    change = _transition(state, wanted, reason, ts, rules)
    return [change] if change is not None else []


def force_state(
    state: AccountState, new_state: TradingState, reason: str, ts: int, rules: AccountRules
) -> list[StateChange]:
    """Operator HALT/RESUME: set the state directly (RESUME is the only way out of SHUTDOWN)."""
    change = _transition(state, new_state, reason, ts, rules)
    return [change] if change is not None else []


def vol_scale(state: AccountState, vol: VolTarget) -> float:
    """clamp(target daily vol / realised daily vol of end-of-day equity, min_scale, max_scale)."""
    if not vol.enabled:
        return 1.0
    closes = state.day_closes[-(vol.lookback + 1) :]
    returns = [b / a - 1 for a, b in itertools.pairwise(closes) if a > 0]
    if len(returns) < 2:
        return min(max(1.0, vol.min_scale), vol.max_scale)
    realised = statistics.stdev(returns)
    if realised <= 0 or not math.isfinite(realised):
        return vol.max_scale
    return min(max(vol.target_daily_vol / realised, vol.min_scale), vol.max_scale)
