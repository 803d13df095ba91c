"""The decision kernel: one requested trade, its context, its verdict (seed 001 evaluation order).

`evaluate(ctx)` is a pure function of a `TradeContext`. The engine gathers the context from the
level states; the context is published as the decision's `facts`, so an auditor can re-derive
every verdict from the facts alone (`riskguard verify`).

Order (SPEC §6.3): target caps (per_symbol) -> signal change -> band -> split into the closing
(risk-reducing) part and the opening (risk-increasing) part -> on the opening part only: account
gate, re-entry veto, per-trade clip, lot rounding, dust, entry quota and buying power (account),
cluster, factor (beta), group, portfolio (gross, the risk budget's gross cap, net, concentration).
Exits and closing parts are never clipped or denied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from streams.core.decimals import at_most, over, same, under
from streams.core.levels.symbol.targets import cap_target

_EPS = 1e-9
_BLOCKING_STATES = {
    "HALTED": "account_halted",
    "SHUTDOWN": "account_shutdown",
    "REDUCING": "account_reducing",
}


@dataclass(frozen=True, slots=True)
class TradeContext:
    """Every number a decision depends on; published as `facts`."""

    origin: str
    price: float
    filled_qty: float
    pending_qty: float
    equity: float
    trading_state: str
    exit: bool = False
    exit_reason: str = ""
    exit_layer: str = "per_symbol"
    requested_target: float | None = None
    committed_target: float | None = None
    check_signal_change: bool = True
    signal_change_threshold: float = 0.05
    vetoed: bool = False
    symbol_cap: float | None = None
    weight_cap: float | None = None
    band_pct: float = 0.0
    band_enabled: bool = True
    rebalance_to: str = "edge"
    max_notional: float | None = None
    lot_size: float = 1.0
    min_order_notional: float = 0.0
    quota_headroom: float | None = None
    cluster_id: str = ""
    cluster_exposure: float = 0.0
    cluster_cap: float | None = None
    cluster_critical: float | None = None
    group: str = "Default"
    group_exposure: float = 0.0
    group_cap: float | None = None
    group_critical: float | None = None
    gross: float = 0.0
    gross_cap: float | None = None
    budget_cap: float | None = None
    net: float = 0.0
    net_cap: float | None = None
    position_critical: float | None = None
    vol_scale: float = 1.0
    quota_measure: str | None = None  # notional | var | margin; None: no entry quota
    quota_used: float | None = None  # the day's quota used so far, in the measure's currency
    quota_rate: float = 1.0  # quota used per unit of opening notional (1, the margin rate, or z × σ)
    cash: float | None = None  # the account's latest cash (None until an equity event carried one)
    buying_power: float | None = None  # cash × multiplier − pending buys; None: no check (off, or no cash yet)
    beta: float | None = None  # the symbol's beta to the factor benchmark; None: no factor benchmark
    beta_exposure: float | None = None  # B = Σ signed value × beta before the trade
    beta_cap: float | None = None  # max_abs_beta_pct × equity; None: no factor cap

    @property
    def projected_qty(self) -> float:
        return self.filled_qty + self.pending_qty

    def to_facts(self) -> dict[str, Any]:
        """The context as a JSON-ready mapping (what `asdict` gives, without its deep copy of scalars)."""
        return {name: getattr(self, name) for name in _CONTEXT_FIELDS}

    @classmethod
    def from_facts(cls, facts: dict[str, Any]) -> TradeContext:
        """Rebuild a context from published facts (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in facts.items() if k in names})


# Every field is a str, float, bool or None: a flat mapping in declaration order equals `asdict`.
_CONTEXT_FIELDS = tuple(f.name for f in fields(TradeContext))


@dataclass(frozen=True, slots=True)
class Clip:
    layer: str
    reason: str
    before: float
    after: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """The verdict: action, signed quantity and the layer that decided it."""

    action: str
    side: str | None
    qty: float
    requested_qty: float
    layer: str
    reason: str
    clips: tuple[Clip, ...] = ()
    commit_target: float | None = None
    band: tuple[float, float] | None = None
    opening_notional: float = 0.0
    published: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def signed_qty(self) -> float:
        if self.action not in ("ALLOW", "CLIP") or self.side is None:
            return 0.0
        return self.qty if self.side == "BUY" else -self.qty


def round_lot_nearest(qty: float, lot: float) -> float:
    """Round a non-negative quantity to the nearest lot (half up)."""
    return math.floor(qty / lot + 0.5 + _EPS) * lot


def round_lot_down(qty: float, lot: float) -> float:
    """Round a non-negative quantity toward zero to a whole lot."""
    return math.floor(qty / lot + _EPS) * lot


def band_of(target: float, band_pct: float) -> tuple[float, float]:
    """The no-trade band around a target notional, mirrored for short targets."""
    if target >= 0:
        return target * (1 - band_pct), target * (1 + band_pct)
    return target * (1 + band_pct), target * (1 - band_pct)


def inside_band(value: float, band: tuple[float, float]) -> bool:
    """`value` within `band`, edges included, compared as decimals (SPEC §6.3)."""
    lo, hi = band  # `at_least(value, lo) and at_most(value, hi)`, the tolerance asked only off the plain test
    return (value >= lo or same(value, lo)) and (value <= hi or same(value, hi))


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _cap_target(ctx: TradeContext, target: float) -> tuple[float, list[Clip]]:
    target, steps = cap_target(target, ((ctx.symbol_cap, "symbol_cap"), (ctx.weight_cap, "max_weight")))
    return target, [Clip("per_symbol", reason, before, after) for reason, before, after in steps]


def _goal(ctx: TradeContext, target: float, value: float) -> tuple[float | None, str, tuple[float, float]]:
    """Where to trade to: None inside the band, else the edge (or target) and the reason."""
    lo, hi = band_of(target, ctx.band_pct if ctx.band_enabled else 0.0)
    if inside_band(value, (lo, hi)):
        return None, "within_band", (lo, hi)
    to_target = ctx.rebalance_to == "target" or not ctx.band_enabled or target == 0
    if value < lo:
        return (
            (target if to_target else lo),
            ("buy_to_target" if to_target else "buy_to_lower_bound"),
            (lo, hi),
        )
    return (target if to_target else hi), ("sell_to_target" if to_target else "sell_to_upper_bound"), (lo, hi)


def _exit(ctx: TradeContext) -> Outcome:
    pos = ctx.projected_qty
    if pos == 0:
        return Outcome("NOOP", None, 0.0, 0.0, ctx.exit_layer, "already_flat", published=False)
    side = "SELL" if pos > 0 else "BUY"
    return Outcome("ALLOW", side, abs(pos), abs(pos), ctx.exit_layer, ctx.exit_reason)


def _beta_room(ctx: TradeContext, side_sign: int, value: float, value_after_close: float) -> float:
    """Opening notional the factor cap leaves (SPEC §6.2): |B| may grow up to the cap, never beyond.

    B0 is the beta exposure once the closing part is done. A trade that moves B toward zero always
    passes: it may go on through zero until |B| is back at max(|B0|, cap), as the net cap does.
    """
    beta = ctx.beta or 0.0
    exposure = ctx.beta_exposure or 0.0
    cap = ctx.beta_cap or 0.0
    b0 = exposure + (value_after_close - value) * beta
    if side_sign * _sign(beta) * b0 >= 0:
        room = cap - abs(b0)
    else:
        room = max(2 * abs(b0), abs(b0) + cap)
    return room / abs(beta)


def _headrooms(ctx: TradeContext, side_sign: int, value_after_close: float) -> list[tuple[str, str, float]]:
    """(layer, reason, headroom in currency) for the opening part, in evaluation order."""
    value = ctx.projected_qty * ctx.price
    shift = abs(value_after_close) - abs(value)
    rooms: list[tuple[str, str, float]] = []
    if ctx.quota_headroom is not None and ctx.quota_rate > 0:
        # The headroom is in the measure's currency: each unit of notional uses `quota_rate` of it.
        rooms.append(("account", "entry_quota", ctx.quota_headroom / ctx.quota_rate))
    if ctx.buying_power is not None and side_sign > 0:
        rooms.append(("account", "buying_power", ctx.buying_power))
    if ctx.cluster_cap is not None:
        rooms.append(("cluster", "cluster_cap", ctx.cluster_cap - (ctx.cluster_exposure + shift)))
    if ctx.beta_cap is not None and ctx.beta_exposure is not None and ctx.beta:
        rooms.append(("factor", "beta_cap", _beta_room(ctx, side_sign, value, value_after_close)))
    if ctx.group_cap is not None:
        rooms.append(("group", "group_cap", ctx.group_cap - (ctx.group_exposure + shift)))
    if ctx.gross_cap is not None:
        rooms.append(("portfolio", "gross_cap", ctx.gross_cap - (ctx.gross + shift)))
    if ctx.budget_cap is not None:
        # The dynamic risk budget (SPEC §6.7): equity × equity_allocation × leverage_limit of the regime.
        rooms.append(("portfolio", "budget_cap", ctx.budget_cap - (ctx.gross + shift)))
    if ctx.net_cap is not None:
        net0 = ctx.net - value + value_after_close
        # A trade that shrinks |net| always passes: against the net it may go up to 2|net0|.
        if side_sign * net0 >= 0:
            room = ctx.net_cap - abs(net0)
        else:
            room = max(2 * abs(net0), abs(net0) + ctx.net_cap)
        rooms.append(("portfolio", "net_cap", room))
    if ctx.position_critical is not None:
        rooms.append(("portfolio", "concentration_position", ctx.position_critical - abs(value_after_close)))
    if ctx.group_critical is not None:
        rooms.append(("group", "concentration_group", ctx.group_critical - (ctx.group_exposure + shift)))
    if ctx.cluster_critical is not None:
        rooms.append(("cluster", "concentration_cluster", ctx.cluster_critical - (ctx.cluster_exposure + shift)))
    return rooms


def evaluate(ctx: TradeContext) -> Outcome:
    """Decide one requested trade from its context (pure, deterministic)."""
    if ctx.exit:
        return _exit(ctx)
    if ctx.requested_target is None:
        raise ValueError("a non-exit trade needs requested_target")
    price = ctx.price
    pos = ctx.projected_qty
    value = pos * price
    raw_target = ctx.requested_target

    target, clips = _cap_target(ctx, raw_target)
    if (
        ctx.check_signal_change
        and ctx.committed_target is not None
        and at_most(abs(target - ctx.committed_target), ctx.signal_change_threshold * abs(ctx.committed_target))
    ):
        return Outcome("NOOP", None, 0.0, 0.0, "per_symbol", "signal_unchanged", tuple(clips))

    goal, reason, band = _goal(ctx, target, value)
    raw_goal, _, _ = _goal(ctx, raw_target, value)
    requested_qty = round_lot_nearest(abs(raw_goal - value) / price, ctx.lot_size) if raw_goal is not None else 0.0
    if goal is None:
        return Outcome("NOOP", None, 0.0, requested_qty, "per_symbol", reason, tuple(clips), target, band)

    delta_qty = (goal - value) / price
    side_sign = _sign(delta_qty)
    side = "BUY" if side_sign > 0 else "SELL"

    # Split: the part that moves toward zero (never clipped) and the part that opens risk.
    if pos != 0 and _sign(pos) != side_sign:
        if goal == 0 or _sign(goal) != _sign(pos):  # reaches or crosses zero (by sign: no float residue)
            close_qty = abs(pos)
            open_raw = abs(delta_qty) - abs(pos) if goal != 0 else 0.0
        else:
            close_qty = min(round_lot_nearest(abs(delta_qty), ctx.lot_size), abs(pos))
            open_raw = 0.0
    else:
        close_qty, open_raw = 0.0, abs(delta_qty)

    open_qty = 0.0
    deciding_layer, deciding_reason = "per_symbol", reason
    denied: tuple[str, str] | None = None
    if open_raw > 0:
        open_notional = open_raw * price
        blocked = _BLOCKING_STATES.get(ctx.trading_state)
        if blocked is not None or ctx.vetoed:
            denied = ("account", blocked) if blocked is not None else ("per_symbol", "reentry_veto")
            if close_qty > 0:  # a zero-crossing trade: the closing part goes, this layer cut the opening part
                clips.append(Clip(*denied, open_notional, 0.0))
        else:
            if ctx.max_notional is not None:
                room = max(ctx.max_notional - close_qty * price, 0.0)
                nearest = round_lot_nearest(open_notional / price, ctx.lot_size) * price
                if over(open_notional, room):
                    clips.append(Clip("per_trade", "max_notional", open_notional, room))
                    open_notional = room
                elif not clips and nearest > room * (1 + _EPS):
                    # The nearest lot would carry the order over the ceiling: the limit clips it, so it
                    # rounds toward zero like any clipped order.
                    clips.append(Clip("per_trade", "max_notional", nearest, room))
            rounder = round_lot_down if clips else round_lot_nearest
            open_qty = rounder(open_notional / price, ctx.lot_size)
            if open_qty <= 0 or under(open_qty * price, ctx.min_order_notional):
                # Nothing worth sending is left: blame the trade limit when it cut the order, else dust.
                by_limit = bool(clips) and clips[-1].reason == "max_notional"
                if close_qty > 0 and not by_limit:
                    clips.append(Clip("per_trade", "dust", open_notional, 0.0))
                denied = ("per_trade", "max_notional" if by_limit else "dust")
                open_qty = 0.0
            else:
                value_after_close = 0.0 if close_qty > 0 else value
                for layer, why, room in _headrooms(ctx, side_sign, value_after_close):
                    notional = open_qty * price
                    if over(notional, room):
                        clipped = round_lot_down(max(room, 0.0) / price, ctx.lot_size)
                        if clipped <= 0 or under(clipped * price, ctx.min_order_notional):
                            clips.append(Clip(layer, why, notional, 0.0))
                            denied, open_qty = (layer, why), 0.0
                            break
                        clips.append(Clip(layer, why, notional, clipped * price))
                        open_qty = clipped
        if denied is not None and close_qty == 0:
            layer, why = denied
            commit = None if layer == "account" or why == "reentry_veto" else target
            return Outcome("DENY", side, 0.0, requested_qty, layer, why, tuple(clips), commit, band)

    qty = close_qty + open_qty
    if qty <= 0:
        return Outcome("NOOP", None, 0.0, requested_qty, "per_symbol", "zero_quantity", tuple(clips), target, band)
    # A request that only reduces risk (target between zero and the position) is never clipped
    # (SPEC §6): a cap on its target can only make the trade larger, so it stays an ALLOW.
    cut = bool(clips) and not (value != 0 and 0 <= raw_target / value <= 1)
    if denied is not None:
        deciding_layer, deciding_reason = denied
    elif cut:
        deciding_layer, deciding_reason = clips[-1].layer, clips[-1].reason
    action = "CLIP" if cut or denied is not None else "ALLOW"
    if goal == 0 and action == "ALLOW":
        deciding_reason = "close_position"
    return Outcome(
        action,
        side,
        qty,
        max(requested_qty, qty),
        deciding_layer,
        deciding_reason,
        tuple(clips),
        target,
        band,
        opening_notional=open_qty * price,
    )
