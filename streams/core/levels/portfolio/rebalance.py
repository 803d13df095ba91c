"""Target-weight rebalance (seed 004 §4.1–4.4, §7 constraints, §9 record; SPEC §6.6).

One pure pass, each stage recorded per symbol in `SymbolLine.status`:

1. §4.1 members (the target symbols, or every held symbol for equal weight), portfolio value =
   Σ members' qty × price + cash, live and target weights, drift, desired value and delta.
   §7 max position weight caps each target weight; the capped-off weight is left in cash.
2. §4.2 drift band: trade when |drift| >= abs band OR |drift| >= rel band × target weight.
   Then the §5 / §7 overlays on each drift trade (SPEC §6.6): no-buy / no-sell lists, the tilt
   (`momentum`, `mean_reversion`), profit-take and today's-winners bias; they scale or drop a trade and
   tag it, and every later stage (budget, max trades, min trade value) still binds.
3. §7 min trade value on |delta| (a delta below it can never become an order, so it must not take
   a trade slot or dilute the scale), then §7 max trades keeping the largest |delta|.
4. §4.3 budget = budget_pct × portfolio value; scale = min(1, budget / max(total_buy, total_sell))
   over the trades kept by stage 3.
5. §4.4 qty = floor(trade value / price); sells never above the (floored) holding; §7 min trade
   value on the final notional; then reconciliation trims the smallest orders of a side whose
   notional exceeds the budget.

Every `_pct` is a fraction (0.10 = 10 %), as in the config. Sums use math.fsum and every list is
sorted by symbol, so the plan does not depend on the order of the input mappings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal, TypedDict

from schemas.config import RebalancePolicy
from streams.core.decimals import at_least, at_most, over, under

Side = Literal["BUY", "SELL"]


class LineStatus(StrEnum):
    """What became of a member's trade, in pipeline order; `ordered` when it has an order."""

    NO_PORTFOLIO_VALUE = "no_portfolio_value"
    NO_PRICE = "no_price"
    WITHIN_BAND = "within_band"
    NO_BUY = "no_buy"
    NO_SELL = "no_sell"
    DROPPED_BY_TILT = "dropped_by_tilt"
    BELOW_MIN_TRADE_VALUE = "below_min_trade_value"
    MAX_TRADES = "max_trades"
    ZERO_QTY = "zero_qty"
    TRIMMED_OUT = "trimmed_out"
    ORDERED = "ordered"


@dataclass(frozen=True, slots=True)
class Holding:
    """A held quantity, the price (LTP) it is valued and traded at, and what the overlays read.

    `avg_entry` is the average entry price from fills (0: none); `prev_close` the symbol's last close
    of the previous trading day (None: unknown), for today's winners.
    """

    qty: float
    price: float
    avg_entry: float = 0.0
    prev_close: float | None = None

    @property
    def total_pnl_pct(self) -> float | None:
        """price / average entry − 1 of a long holding (SPEC §6.6); None when there is no filled long."""
        if self.qty <= 0 or self.avg_entry <= 0:
            return None
        return self.price / self.avg_entry - 1.0


@dataclass(frozen=True, slots=True)
class Order:
    """A proposed rebalance order with the reasons that shaped it."""

    symbol: str
    side: Side
    qty: int
    price: float
    notional: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SymbolLine:
    """One member's §4.1 figures and what became of its trade."""

    symbol: str
    qty: float
    price: float | None
    value: float
    live_weight: float
    requested_weight: float
    target_weight: float
    drift: float
    desired_value: float
    delta_value: float
    trade_value: float
    status: LineStatus
    overlays: tuple[str, ...] = ()  # the overlays that scaled or dropped the drift trade


@dataclass(frozen=True, slots=True)
class Summary:
    """Seed 004 §9 summary metrics, plus the figures they come from."""

    turnover_pct: float
    max_drift_before: float
    max_drift_after: float
    trades: int
    buys: int
    sells: int
    budget: float
    budget_used_pct: float
    scale: float
    total_buy: float
    total_sell: float
    buy_notional: float
    sell_notional: float


class RebalanceRecord(TypedDict):
    """The JSON-ready `policy`, `inputs`, `orders` and `summary` of a RebalanceRun."""

    policy: dict[str, object]
    inputs: dict[str, object]
    orders: list[dict[str, object]]
    summary: dict[str, object]


@dataclass(frozen=True, slots=True)
class RebalancePlan:
    """A rebalance proposal: inputs snapshot, per-symbol lines, orders and summary."""

    portfolio_value: float
    cash: float
    target_source: Literal["argument", "config", "equal_weight"]
    lines: tuple[SymbolLine, ...]
    excluded: tuple[str, ...]
    orders: tuple[Order, ...]
    summary: Summary
    policy: RebalancePolicy

    def record(self) -> RebalanceRecord:
        """The seed 004 §9 snapshots as plain JSON-ready data."""
        inputs: dict[str, object] = {
            "portfolio_value": self.portfolio_value,
            "cash": self.cash,
            "target_source": self.target_source,
            "holdings": [
                {
                    "symbol": line.symbol,
                    "qty": line.qty,
                    "price": line.price,
                    "value": line.value,
                    "weight": line.live_weight,
                }
                for line in self.lines
            ],
            "target_weights": {line.symbol: line.target_weight for line in self.lines},
            "requested_target_weights": {line.symbol: line.requested_weight for line in self.lines},
            "excluded": list(self.excluded),
        }
        orders: list[dict[str, object]] = [
            {
                "symbol": order.symbol,
                "side": order.side,
                "qty": order.qty,
                "price": order.price,
                "notional": order.notional,
                "reasons": list(order.reasons),
            }
            for order in self.orders
        ]
        summary: dict[str, object] = {
            "turnover_pct": self.summary.turnover_pct,
            "max_drift_before": self.summary.max_drift_before,
            "max_drift_after": self.summary.max_drift_after,
            "trades": self.summary.trades,
            "buys": self.summary.buys,
            "sells": self.summary.sells,
            "budget": self.summary.budget,
            "budget_used_pct": self.summary.budget_used_pct,
            "scale": self.summary.scale,
            "total_buy": self.summary.total_buy,
            "total_sell": self.summary.total_sell,
            "buy_notional": self.summary.buy_notional,
            "sell_notional": self.summary.sell_notional,
            "lines": [
                {
                    "symbol": line.symbol,
                    "drift": line.drift,
                    "desired_value": line.desired_value,
                    "delta_value": line.delta_value,
                    "trade_value": line.trade_value,
                    "status": line.status.value,
                    "overlays": list(line.overlays),
                }
                for line in self.lines
            ],
        }
        return RebalanceRecord(
            policy=dict(self.policy.model_dump(mode="json")), inputs=inputs, orders=orders, summary=summary
        )


def plan_rebalance(
    holdings: Mapping[str, Holding],
    cash: float,
    targets: Mapping[str, float] | None,
    policy: RebalancePolicy,
) -> RebalancePlan:
    """Seed 004 §4.1–4.4 with §7 constraints: the orders that move holdings toward target weights."""
    _check_inputs(holdings, cash)
    requested, source = _target_weights(holdings, targets, policy)
    members = sorted(requested)
    excluded = tuple(sorted(set(holdings) - set(requested)))
    portfolio_value = math.fsum([*(holdings[s].qty * holdings[s].price for s in members if s in holdings), cash])

    winners = today_winners(holdings) if policy.today_bias is not None else None
    lines: dict[str, SymbolLine] = {}
    for symbol in members:
        line = _member_line(symbol, holdings.get(symbol), requested[symbol], portfolio_value, policy)
        if line.status == LineStatus.ORDERED:
            line = apply_overlays(line, holdings[symbol], policy, winners)
        if line.status == LineStatus.ORDERED:
            line = _screen(line, policy)
        lines[symbol] = line

    candidates = sorted((line for line in lines.values() if line.status == LineStatus.ORDERED), key=_largest_first)
    for line in candidates[policy.max_trades :]:
        lines[line.symbol] = replace(line, status=LineStatus.MAX_TRADES)
    kept = candidates[: policy.max_trades]

    total_buy = math.fsum(line.delta_value for line in kept if line.delta_value > 0)
    total_sell = math.fsum(-line.delta_value for line in kept if line.delta_value < 0)
    budget = policy.budget_pct * max(portfolio_value, 0.0)
    largest_side = max(total_buy, total_sell)
    scale = min(1.0, budget / largest_side) if largest_side > 0 else 1.0

    orders: list[Order] = []
    for line in kept:
        trade_value = line.delta_value * scale
        held = holdings[line.symbol]
        qty, held_capped = trade_quantity(trade_value, held.price, held.qty)
        notional = qty * held.price
        status = LineStatus.ORDERED
        if qty == 0:
            status = LineStatus.ZERO_QTY
        elif under(notional, policy.min_trade_value):
            status = LineStatus.BELOW_MIN_TRADE_VALUE
        lines[line.symbol] = replace(line, trade_value=trade_value, status=status)
        if status != LineStatus.ORDERED:
            continue
        reasons = ["drift", *line.overlays]
        if over(line.requested_weight, policy.max_position_weight):
            reasons.append("capped_max_weight")
        if scale < 1:
            reasons.append("budget_scaled")
        if held_capped:
            reasons.append("capped_holdings")
        side: Side = "BUY" if trade_value > 0 else "SELL"
        orders.append(Order(line.symbol, side, qty, held.price, notional, tuple(reasons)))

    final = reconcile_to_budget(orders, budget, policy.min_trade_value)
    kept_symbols = {order.symbol for order in final}
    for order in orders:
        if order.symbol not in kept_symbols:
            lines[order.symbol] = replace(lines[order.symbol], status=LineStatus.TRIMMED_OUT)

    ordered_lines = tuple(lines[s] for s in members)
    summary = _summary(ordered_lines, final, portfolio_value, budget, scale, total_buy, total_sell)
    return RebalancePlan(
        portfolio_value=portfolio_value,
        cash=cash,
        target_source=source,
        lines=ordered_lines,
        excluded=excluded,
        orders=final,
        summary=summary,
        policy=policy,
    )


def trade_quantity(trade_value: float, price: float, held_qty: float) -> tuple[int, bool]:
    """Seed 004 §4.4 whole quantity of a signed trade value, and whether the holding capped a sell."""
    qty = math.floor(abs(trade_value) / price)
    if trade_value >= 0:
        return qty, False
    available = math.floor(max(held_qty, 0.0))
    return (available, True) if qty > available else (qty, False)


def reconcile_to_budget(orders: Sequence[Order], budget: float, min_trade_value: float = 0.0) -> tuple[Order, ...]:
    """Seed 004 §4.4: while a side's notional exceeds the budget, trim its smallest order first.

    The smallest order loses just the whole units that cover the excess; an order trimmed to zero,
    or below the min trade value, is dropped. Trimmed orders carry the `trimmed` reason.
    """
    by_symbol = {order.symbol: order for order in orders}
    for side in ("BUY", "SELL"):
        while True:
            same_side = sorted((o for o in by_symbol.values() if o.side == side), key=lambda o: (o.notional, o.symbol))
            excess = math.fsum(o.notional for o in same_side) - budget
            if not same_side or excess <= 0:
                break
            smallest = same_side[0]
            qty = smallest.qty - min(smallest.qty, math.ceil(excess / smallest.price))
            notional = qty * smallest.price
            if qty == 0 or under(notional, min_trade_value):
                del by_symbol[smallest.symbol]
                continue
            reasons = smallest.reasons if "trimmed" in smallest.reasons else (*smallest.reasons, "trimmed")
            by_symbol[smallest.symbol] = replace(smallest, qty=qty, notional=notional, reasons=reasons)
    return tuple(by_symbol[s] for s in sorted(by_symbol))


def _check_inputs(holdings: Mapping[str, Holding], cash: float) -> None:
    if not math.isfinite(cash):
        raise ValueError(f"cash must be finite, got {cash!r}")
    for symbol, held in holdings.items():
        if not math.isfinite(held.qty):
            raise ValueError(f"{symbol}: holding qty must be finite, got {held.qty!r}")
        if not (math.isfinite(held.price) and held.price > 0):
            raise ValueError(f"{symbol}: price must be finite and > 0, got {held.price!r}")


def _check_targets(targets: Mapping[str, float]) -> None:
    for symbol, weight in targets.items():
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"{symbol}: target weight must be finite and >= 0, got {weight!r}")


def _target_weights(
    holdings: Mapping[str, Holding], targets: Mapping[str, float] | None, policy: RebalancePolicy
) -> tuple[dict[str, float], Literal["argument", "config", "equal_weight"]]:
    """Targets given, else the config's, else equal weight over the held symbols (seed 004 §13.1)."""
    chosen = targets if targets is not None else policy.targets
    if chosen:
        _check_targets(chosen)
        return dict(chosen), "argument" if targets is not None else "config"
    if not holdings:
        return {}, "equal_weight"
    weight = 1.0 / len(holdings)
    return {symbol: weight for symbol in holdings}, "equal_weight"


def _member_line(
    symbol: str, held: Holding | None, requested: float, portfolio_value: float, policy: RebalancePolicy
) -> SymbolLine:
    """§4.1 figures of one member under the §7 weight cap, screened by the §4.2 band and min trade value."""
    value = held.qty * held.price if held is not None else 0.0
    target = min(requested, policy.max_position_weight)
    if portfolio_value <= 0:
        live, desired, status = 0.0, 0.0, LineStatus.NO_PORTFOLIO_VALUE
    else:
        live, desired = value / portfolio_value, target * portfolio_value
        status = LineStatus.ORDERED if held is not None else LineStatus.NO_PRICE
    drift = live - target
    delta = desired - value
    if status == LineStatus.ORDERED and not _outside_band(drift, target, policy):
        status = LineStatus.WITHIN_BAND
    return SymbolLine(
        symbol=symbol,
        qty=held.qty if held is not None else 0.0,
        price=held.price if held is not None else None,
        value=value,
        live_weight=live,
        requested_weight=requested,
        target_weight=target,
        drift=drift,
        desired_value=desired,
        delta_value=delta,
        trade_value=0.0,
        status=status,
    )


def _screen(line: SymbolLine, policy: RebalancePolicy) -> SymbolLine:
    """§7 min trade value on the (overlaid) drift trade; a zero trade is no trade."""
    if under(abs(line.delta_value), policy.min_trade_value):
        return replace(line, status=LineStatus.BELOW_MIN_TRADE_VALUE)
    if line.delta_value == 0:
        return replace(line, status=LineStatus.ZERO_QTY)
    return line


def today_winners(holdings: Mapping[str, Holding]) -> float | None:
    """Share of long holdings whose last close is above the previous trading day's (None: none known)."""
    known = [h for _, h in sorted(holdings.items()) if h.qty > 0 and h.prev_close is not None]
    if not known:
        return None
    return sum(1 for h in known if h.prev_close is not None and h.price > h.prev_close) / len(known)


def apply_overlays(line: SymbolLine, held: Holding, policy: RebalancePolicy, winners: float | None) -> SymbolLine:
    """Seed 004 §5 and §7 overlays on one drift trade (SPEC §6.6): scaled, dropped, or left as it was.

    A dropped trade gets its status (`no_buy`, `no_sell`, `dropped_by_tilt`); a scaled one keeps going
    with its new `delta_value` and the names of the overlays that moved it. A sell never exceeds the
    holding.
    """
    delta = line.delta_value
    buy = delta > 0
    if buy and line.symbol in policy.no_buy:
        return replace(line, status=LineStatus.NO_BUY, overlays=("no_buy",))
    if not buy and line.symbol in policy.no_sell:
        return replace(line, status=LineStatus.NO_SELL, overlays=("no_sell",))
    pnl = held.total_pnl_pct
    loser, winner = pnl is not None and pnl < 0, pnl is not None and pnl > 0
    factor = 1.0
    tags: list[str] = []
    strength = policy.tilt_strength
    if policy.tilt_mode == "momentum":
        if buy and loser:
            return replace(line, status=LineStatus.DROPPED_BY_TILT, overlays=("tilt_momentum",))
        if not buy and winner:
            factor *= 1.0 - strength
            tags.append("tilt_momentum")
    elif policy.tilt_mode == "mean_reversion":
        if not buy and loser:
            return replace(line, status=LineStatus.DROPPED_BY_TILT, overlays=("tilt_mean_reversion",))
        if buy and loser:
            factor *= 1.0 + strength
            tags.append("tilt_mean_reversion")
    threshold = policy.profit_take_threshold_pct
    if not buy and threshold is not None and pnl is not None and at_least(pnl, threshold):
        factor *= 1.0 + policy.profit_take_boost_pct
        tags.append("profit_take")
    if _today_bias_applies(policy, winners, buy):
        factor *= 1.0 + (policy.today_bias.boost_pct if policy.today_bias is not None else 0.0)
        tags.append("today_bias")
    if not tags:
        return line
    scaled = delta * factor
    if not buy:
        scaled = max(scaled, -max(held.qty, 0.0) * held.price)  # capped at the holding
    return replace(line, delta_value=scaled, overlays=tuple(tags))


def _today_bias_applies(policy: RebalancePolicy, winners: float | None, buy: bool) -> bool:
    """Many winners today: sells go a little further; few: buys do (seed 004 §5.3)."""
    bias = policy.today_bias
    if bias is None or winners is None:
        return False
    return at_most(winners, bias.low_pct) if buy else at_least(winners, bias.high_pct)


def _outside_band(drift: float, target: float, policy: RebalancePolicy) -> bool:
    """Seed 004 §4.2: abs(drift) >= abs band OR abs(drift) >= rel band × target weight."""
    size = abs(drift)
    return at_least(size, policy.drift_band_abs_pct) or at_least(size, policy.drift_band_rel_pct * target)


def _largest_first(line: SymbolLine) -> tuple[float, str]:
    return -abs(line.delta_value), line.symbol


def _summary(
    lines: Sequence[SymbolLine],
    orders: Sequence[Order],
    portfolio_value: float,
    budget: float,
    scale: float,
    total_buy: float,
    total_sell: float,
) -> Summary:
    buy_notional = math.fsum(o.notional for o in orders if o.side == "BUY")
    sell_notional = math.fsum(o.notional for o in orders if o.side == "SELL")
    traded = {o.symbol: (o.notional if o.side == "BUY" else -o.notional) for o in orders}
    if portfolio_value > 0:
        # After: as if every order filled at its price; cash absorbs the difference, so the value is unchanged.
        before = max((abs(line.drift) for line in lines), default=0.0)
        after = max(
            (abs((line.value + traded.get(line.symbol, 0.0)) / portfolio_value - line.target_weight) for line in lines),
            default=0.0,
        )
        turnover = math.fsum([buy_notional, sell_notional]) / portfolio_value
    else:
        before = after = turnover = 0.0
    return Summary(
        turnover_pct=turnover,
        max_drift_before=before,
        max_drift_after=after,
        trades=len(orders),
        buys=sum(1 for o in orders if o.side == "BUY"),
        sells=sum(1 for o in orders if o.side == "SELL"),
        budget=budget,
        budget_used_pct=max(buy_notional, sell_notional) / budget if budget > 0 else 0.0,
        scale=scale,
        total_buy=total_buy,
        total_sell=total_sell,
        buy_notional=buy_notional,
        sell_notional=sell_notional,
    )
