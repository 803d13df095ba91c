"""Level 3 — per-symbol targets, stops and the re-entry veto (seed 001 §Per-Symbol, seed 000 Level 3).

Stops are checked on each bar against the filled position: stop-loss, trailing, take-profit, in that
priority (stop-loss wins; an adverse move is assumed first). The exit price is the level, or the
open when the bar gapped through it. The trailing peak is the highest high since entry before this
bar and moves after the check. A stopped symbol is vetoed for risk-increasing trades per `reentry`.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.config import StopLevels, StopRules
from streams.core.decimals import at_least, at_most, level
from streams.core.positions import Position


@dataclass(slots=True)
class SymbolState:
    """Level-3 state of one (account, symbol)."""

    committed: float | None = None
    last_eval: int | None = None
    last_signal_ts: int | None = None
    vetoed: bool = False
    veto_bars_left: int = 0


@dataclass(frozen=True, slots=True)
class StopHit:
    origin: str
    level: float
    price: float


def check_stops(position: Position, open_: float, high: float, low: float, levels: StopLevels) -> StopHit | None:
    """The stop a bar triggers for an open position, if any (long and mirrored short).

    Levels are the decimals their inputs denote (`streams.core.decimals`): a bar that touches a level
    exactly triggers it, whatever binary floating point makes of entry × (1 ± pct).
    """
    qty, entry = position.qty, position.avg_entry
    if qty == 0 or entry <= 0:
        return None
    if qty > 0:
        if levels.stop_loss_pct is not None:
            stop = level(entry * (1 - levels.stop_loss_pct))
            if at_most(low, stop):
                return StopHit("stop_loss", stop, min(open_, stop))
        if levels.trailing_pct is not None:
            stop = level(position.peak * (1 - levels.trailing_pct))
            if at_most(low, stop):
                return StopHit("trailing_stop", stop, min(open_, stop))
        if levels.take_profit_pct is not None:
            stop = level(entry * (1 + levels.take_profit_pct))
            if at_least(high, stop):
                return StopHit("take_profit", stop, max(open_, stop))
        return None
    if levels.stop_loss_pct is not None:
        stop = level(entry * (1 + levels.stop_loss_pct))
        if at_least(high, stop):
            return StopHit("stop_loss", stop, max(open_, stop))
    if levels.trailing_pct is not None:
        stop = level(position.trough * (1 + levels.trailing_pct))
        if at_least(high, stop):
            return StopHit("trailing_stop", stop, max(open_, stop))
    if levels.take_profit_pct is not None:
        stop = level(entry * (1 - levels.take_profit_pct))
        if at_most(low, stop):
            return StopHit("take_profit", stop, min(open_, stop))
    return None


def has_stops(levels: StopLevels) -> bool:
    return levels.stop_loss_pct is not None or levels.take_profit_pct is not None or levels.trailing_pct is not None


def mark_extremes(position: Position, high: float, low: float) -> None:
    """Move the trailing peak/trough after the bar's stop check."""
    if position.qty != 0:
        position.peak = max(position.peak, high)
        position.trough = min(position.trough, low) if position.trough > 0 else low


def stop_out(state: SymbolState, rules: StopRules) -> None:
    """Mark a symbol stopped: vetoed until a rebalance, for `cooldown_bars` bars, or not at all."""
    if rules.reentry == "allow":
        state.vetoed = False
        return
    state.vetoed = True
    state.veto_bars_left = rules.cooldown_bars if rules.reentry == "cooldown" else 0
    if rules.reentry == "cooldown" and rules.cooldown_bars == 0:
        state.vetoed = False


def tick_cooldown(state: SymbolState, rules: StopRules) -> None:
    """Count one bar of a cooling-down symbol; lift the veto when the cooldown is over."""
    if state.vetoed and rules.reentry == "cooldown":
        state.veto_bars_left -= 1
        if state.veto_bars_left <= 0:
            state.vetoed = False


def clear_veto(state: SymbolState) -> None:
    """A rebalance run clears the re-entry veto."""
    state.vetoed = False
    state.veto_bars_left = 0
