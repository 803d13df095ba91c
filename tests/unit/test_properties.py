"""Property tests of the guard's invariants (SPEC §6, §7): the decision kernel and the engine.

The kernel is driven with generated `TradeContext`s; the engine with a hypothesis state machine
over bars, signals, fills and equity moves; replays with generated tapes. Every test states one
invariant a risk desk relies on: an exit is never denied, a halted account never opens risk, and
no ALLOW/CLIP lets the opening part of a trade push an exposure over a cap.
"""

from __future__ import annotations

import io
import math
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from schemas.config import Config, config_from_dict
from schemas.inputs import Bar, Equity, Fill, Signal
from streams.core.engine import Engine
from streams.core.kernel.decision import Outcome, TradeContext, evaluate
from streams.tape import encode, replay

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STATES = ("ACTIVE", "WARNING", "REDUCING", "HALTED", "SHUTDOWN")
MOSTLY_OPEN = ("ACTIVE", "ACTIVE", "ACTIVE", "WARNING", *STATES)  # weighted toward states that trade
BLOCKED = ("HALTED", "SHUTDOWN", "REDUCING")
EXIT_ORIGINS = ("stop_loss", "take_profit", "trailing_stop", "flatten")
REL_TOL = 1e-6


# ----------------------------------------------------------------- helpers


def _le(x: float, limit: float) -> bool:
    """x <= limit up to float rounding (1e-6 relative)."""
    return x <= limit + REL_TOL * max(1.0, abs(limit), abs(x))


def _whole_lots(qty: float, lot: float) -> bool:
    n = qty / lot
    return abs(n - round(n)) <= REL_TOL * max(1.0, abs(n))


def _split(position: float, signed: float) -> tuple[float, float]:
    """(closing, opening) parts of a signed trade against a projected position."""
    if position == 0 or (position > 0) == (signed > 0):
        return 0.0, abs(signed)
    closing = min(abs(signed), abs(position))
    return closing, abs(signed) - closing


def _signed(action: str, side: str | None, qty: float) -> float:
    if action not in ("ALLOW", "CLIP") or side is None:
        return 0.0
    return qty if side == "BUY" else -qty


def _cap_violations(ctx: TradeContext, out: Outcome) -> list[str]:
    """Every cap the opening part of an ALLOW/CLIP pushes the exposure over (empty when none)."""
    broken: list[str] = []
    if out.action not in ("ALLOW", "CLIP"):
        return broken
    if out.commit_target is not None:
        for name, cap in (("symbol_cap", ctx.symbol_cap), ("weight_cap", ctx.weight_cap)):
            if cap is not None and not _le(abs(out.commit_target), max(cap, 0.0)):
                broken.append(name)
    pos, price = ctx.projected_qty, ctx.price
    closing, opening = _split(pos, out.signed_qty)
    if opening <= 0:
        return broken
    value, value_after = pos * price, (pos + out.signed_qty) * price
    shift = abs(value_after) - abs(value)
    exposure_caps = (
        ("cluster_cap", ctx.cluster_exposure, ctx.cluster_cap),
        ("cluster_critical", ctx.cluster_exposure, ctx.cluster_critical),
        ("group_cap", ctx.group_exposure, ctx.group_cap),
        ("group_critical", ctx.group_exposure, ctx.group_critical),
        ("gross_cap", ctx.gross, ctx.gross_cap),
        ("budget_cap", ctx.gross, ctx.budget_cap),
    )
    for name, exposure, cap in exposure_caps:
        if cap is not None and not _le(exposure + shift, cap):
            broken.append(name)
    if ctx.net_cap is not None:
        net_after = ctx.net - value + value_after
        if not (_le(abs(net_after), ctx.net_cap) or _le(abs(net_after), abs(ctx.net))):
            broken.append("net_cap")
    if ctx.position_critical is not None and not _le(abs(value_after), ctx.position_critical):
        broken.append("position_critical")
    if ctx.quota_headroom is not None and not _le(opening * price * ctx.quota_rate, ctx.quota_headroom):
        broken.append("quota_headroom")
    if ctx.buying_power is not None and out.side == "BUY" and not _le(opening * price, ctx.buying_power):
        broken.append("buying_power")
    if ctx.beta_cap is not None and ctx.beta:
        b0, b_after = _beta_exposures(ctx, out.signed_qty)
        if not (_le(abs(b_after), ctx.beta_cap) or _le(abs(b_after), abs(b0))):
            broken.append("beta_cap")
    if ctx.max_notional is not None and not _le(opening * price, ctx.max_notional - closing * price):
        broken.append("max_notional")
    if out.commit_target is not None:
        # Opening moves toward the capped target: at most half a lot past it (nearest-lot rounding),
        # and not past it at all once a limit has clipped the order (rounding toward zero).
        slack = 0.0 if out.clips else 0.5 * ctx.lot_size * price
        if not _le(abs(value_after), abs(out.commit_target) + slack):
            broken.append("past_target")
    return broken


def _beta_exposures(ctx: TradeContext, signed: float) -> tuple[float, float]:
    """Beta exposure once the closing part of `signed` is done, and after the whole trade."""
    pos, price, beta = ctx.projected_qty, ctx.price, ctx.beta or 0.0
    closing, _ = _split(pos, signed)
    after_close = pos - math.copysign(closing, pos) if closing else pos
    exposure = ctx.beta_exposure or 0.0
    b0 = exposure + (after_close - pos) * price * beta
    return b0, exposure + signed * price * beta


# ----------------------------------------------------------------- kernel strategies

MONEY = st.floats(0, 300_000)
CAP_NAMES = (
    "symbol_cap",
    "weight_cap",
    "max_notional",
    "quota_headroom",
    "cluster_cap",
    "cluster_critical",
    "group_cap",
    "group_critical",
    "gross_cap",
    "budget_cap",
    "net_cap",
    "position_critical",
    "buying_power",
    "beta_cap",
)
SIGN = st.sampled_from([1.0, -1.0])
POSITION_NOTIONAL = st.floats(100, 100_000)
POSITION_KIND = st.sampled_from(["flat", "lots", "lots", "fractional"])
TARGET_KIND = st.sampled_from(["random", "scaled", "few_lots", "zero"])
NEAR = st.floats(0.8, 1.2) | st.floats(0.99, 1.01)


@st.composite
def contexts(draw: st.DrawFn, states: tuple[str, ...] = MOSTLY_OPEN, reducing: bool = False) -> TradeContext:
    """A consistent trade context: exposures include the symbol's own value; up to three caps in force."""
    price = draw(st.floats(1, 1000))
    lot = draw(st.sampled_from([1.0, 5.0, 100.0, 0.5, 0.01]))
    kind = draw(POSITION_KIND)
    notional = draw(POSITION_NOTIONAL) * draw(SIGN)
    filled = {
        "flat": 0.0,
        "lots": round(notional / price / lot) * lot,
        "fractional": round(notional / price, 3),
    }[kind]
    pending = round(draw(st.floats(-30_000, 30_000)) / price / lot) * lot if draw(st.booleans()) else 0.0
    value = (filled + pending) * price
    if reducing:
        target = value * draw(st.floats(0, 1))
    else:
        kind = draw(TARGET_KIND)
        if kind == "random":
            target = draw(st.floats(1, 150_000)) * draw(SIGN)
        elif kind == "scaled":
            target = value * draw(st.floats(-3, 3))
        elif kind == "few_lots":
            target = value + draw(st.floats(0.1, 20)) * draw(SIGN) * lot * price
        else:
            target = 0.0
    other_cluster, other_group, other_gross = draw(MONEY), draw(MONEY), draw(MONEY)
    other_net = draw(st.floats(-1, 1)) * other_gross
    trade = abs(target - value)
    enabled = draw(st.sets(st.sampled_from(CAP_NAMES), max_size=3))
    beta = draw(st.sampled_from([1.0, 0.5, 1.7, -0.8, 0.0])) if "beta_cap" in enabled else None
    other_beta = draw(st.floats(-200_000, 200_000))

    def cap(name: str, around: float) -> float | None:
        """Off unless enabled; then random, or within 20 % of where the trade would take the exposure."""
        if name not in enabled:
            return None
        return draw(MONEY) if draw(st.booleans()) else max(around * draw(NEAR), 0.0)

    return TradeContext(
        origin=draw(st.sampled_from(["signal", "cadence", "rebalance"])),
        price=price,
        filled_qty=filled,
        pending_qty=pending,
        equity=draw(st.floats(1, 1_000_000)),
        trading_state=draw(st.sampled_from(states)),
        requested_target=target,
        committed_target=draw(st.none() | st.floats(-300_000, 300_000)),
        check_signal_change=draw(st.booleans()),
        vetoed=draw(st.sampled_from([False, False, False, True])),
        symbol_cap=cap("symbol_cap", abs(target)),
        weight_cap=cap("weight_cap", abs(target)),
        band_pct=draw(st.sampled_from([0.0, 0.0, 0.02, 0.05, 0.2, 1.5])),
        band_enabled=draw(st.booleans()),
        rebalance_to=draw(st.sampled_from(["edge", "target"])),
        max_notional=cap("max_notional", trade),
        lot_size=lot,
        min_order_notional=draw(st.sampled_from([0.0, 50.0, 1_000.0])),
        quota_headroom=cap("quota_headroom", trade),
        cluster_exposure=other_cluster + abs(value),
        cluster_cap=cap("cluster_cap", other_cluster + abs(target)),
        cluster_critical=cap("cluster_critical", other_cluster + abs(target)),
        group_exposure=other_group + abs(value),
        group_cap=cap("group_cap", other_group + abs(target)),
        group_critical=cap("group_critical", other_group + abs(target)),
        gross=other_gross + abs(value),
        gross_cap=cap("gross_cap", other_gross + abs(target)),
        budget_cap=cap("budget_cap", other_gross + abs(target)),
        net=other_net + value,
        net_cap=cap("net_cap", abs(other_net + target)),
        position_critical=cap("position_critical", abs(target)),
        quota_rate=draw(st.sampled_from([1.0, 0.25, 0.05, 0.0])) if "quota_headroom" in enabled else 1.0,
        buying_power=(draw(MONEY) - draw(st.floats(0, 50_000))) if "buying_power" in enabled else None,
        beta=beta,
        beta_exposure=other_beta + value * beta if beta is not None else None,
        beta_cap=cap("beta_cap", abs(other_beta + target * beta)) if beta is not None else None,
    )


@st.composite
def exit_contexts(draw: st.DrawFn) -> TradeContext:
    """An exit (stop, take-profit, trailing stop or flatten) of a generated position, in any state."""
    ctx = draw(contexts(states=STATES))
    origin = draw(st.sampled_from(EXIT_ORIGINS))
    return TradeContext(
        origin=origin,
        price=ctx.price,
        filled_qty=ctx.filled_qty,
        pending_qty=ctx.pending_qty,
        equity=ctx.equity,
        trading_state=ctx.trading_state,
        exit=True,
        exit_reason=origin,
        exit_layer="account" if origin == "flatten" else "per_symbol",
        max_notional=ctx.max_notional,
        lot_size=ctx.lot_size,
        min_order_notional=ctx.min_order_notional,
        vetoed=ctx.vetoed,
    )


# ----------------------------------------------------------------- kernel properties


def _regression(**changes: Any) -> TradeContext:
    """A plain ACTIVE context at 100 with no band, for the falsifying examples found so far."""
    base: dict[str, Any] = {
        "origin": "signal",
        "price": 100.0,
        "filled_qty": 0.0,
        "pending_qty": 0.0,
        "equity": 1_000_000.0,
        "trading_state": "ACTIVE",
        "band_pct": 0.0,
    }
    return TradeContext(**{**base, **changes})


@settings(FAST, max_examples=400)
@given(contexts())
# Nearest-lot rounding used to carry an unclipped order over max_notional (9.9 -> 10 lots > 995).
@example(_regression(requested_target=990.0, max_notional=995.0))
# ... also for the opening part of a trade that crosses zero (close 101 + open 50.5 -> 51).
@example(_regression(price=1.0, pending_qty=101.0, requested_target=-50.5, max_notional=151.5))
def test_allow_or_clip_when_trade_opens_risk_then_no_cap_is_exceeded(ctx: TradeContext) -> None:
    out = evaluate(ctx)

    assert _cap_violations(ctx, out) == [], (out, ctx)


@FAST
@given(exit_contexts())
def test_exit_when_position_open_then_allow_full_close_in_any_state(ctx: TradeContext) -> None:
    out = evaluate(ctx)

    pos = ctx.projected_qty
    if pos == 0:
        assert out.action == "NOOP"
    else:
        assert (out.action, out.qty) == ("ALLOW", abs(pos))
        assert out.side == ("SELL" if pos > 0 else "BUY")


@FAST
@given(contexts(reducing=True))
# A weight cap on a reducing target (position 1, target 1, cap 0) used to turn the sale into a CLIP.
@example(_regression(price=1.0, filled_qty=1.0, requested_target=1.0, weight_cap=0.0))
# A near-zero target of the position's sign used to split off a float-residue "opening" and CLIP it as dust.
@example(_regression(price=573.0, filled_qty=30.4, requested_target=1.937950327805432e-304))
def test_risk_reducing_target_when_any_state_or_limit_then_never_deny_or_clip(ctx: TradeContext) -> None:
    out = evaluate(ctx)

    assert out.action in ("ALLOW", "NOOP"), (out, ctx)
    assert _split(ctx.projected_qty, out.signed_qty)[1] == 0
    if out.action == "NOOP":
        assert out.reason in ("within_band", "signal_unchanged", "zero_quantity")


@FAST
@given(contexts(states=("HALTED", "SHUTDOWN", "REDUCING")))
def test_any_trade_when_account_halted_shutdown_or_reducing_then_no_risk_increasing_part(
    ctx: TradeContext,
) -> None:
    out = evaluate(ctx)

    assert _split(ctx.projected_qty, out.signed_qty)[1] == 0, (out, ctx)
    if out.action == "DENY":
        assert out.layer == "account"


@FAST
@given(contexts())
def test_allow_or_clip_quantity_when_not_a_full_close_then_whole_lots(ctx: TradeContext) -> None:
    # SPEC §6: a trade crossing zero is a full close (exactly the position) plus a lot-rounded opening.
    out = evaluate(ctx)

    if out.action in ("ALLOW", "CLIP"):
        pos = ctx.projected_qty
        closing, opening = _split(pos, out.signed_qty)
        assert out.qty > 0
        assert _whole_lots(opening, ctx.lot_size), (out, ctx)
        assert closing == abs(pos) or _whole_lots(closing, ctx.lot_size), (out, ctx)


@FAST
@given(contexts())
def test_any_trade_when_facts_published_then_facts_rederive_the_same_outcome(ctx: TradeContext) -> None:
    out = evaluate(ctx)

    again = evaluate(TradeContext.from_facts(orjson.loads(orjson.dumps(ctx.to_facts()))))

    assert again == out


# ----------------------------------------------------------------- engine state machine

T0 = 1_704_099_600_000  # 2024-01-01T09:00:00Z
MINUTE = 60_000
DAY = 24 * 60 * MINUTE
ACCOUNTS = ("acct-a", "acct-b")
SYMBOLS = ("AAA", "BBB", "CCC")

ENGINE_CONFIG: Config = config_from_dict(
    {
        "risk": {
            "account": {
                "initial_balance": 100_000,
                "daily_loss": None,
                "max_total_loss_pct": 0.25,
                "intraday_drawdown": {"warn_pct": 0.03, "halt_pct": 0.06},
                "daily_entry_quota_pct": 0.8,
            },
            "clusters": {"window": 5, "min_periods": 3, "threshold": 0.7, "cap_pct": 0.45},
            "stops": {
                "default": {"stop_loss_pct": 0.04, "take_profit_pct": 0.08, "trailing_pct": 0.06},
                "reentry": "cooldown",
                "cooldown_bars": 2,
            },
            "per_trade": {"max_notional": 25_000, "lot_size": 1, "min_order_notional": 100},
            "per_symbol": {"default_cap": 30_000, "band_pct": 0.05, "rebalance_cadence": "10m"},
            "groups": {"cap_by_group": {"Default": 50_000, "Tech": 35_000}, "symbol_groups": {"AAA": "Tech"}},
            "portfolio": {"gross_cap": 70_000, "net_cap": 40_000},
        },
        "accounts": {"acct-b": {"risk": {"account": {"on_warning": "reduce"}}}},
        "control": {"require_signature": False},
    }
)


class EngineMachine(RuleBasedStateMachine):
    """Bars, signals, fills of earlier decisions and equity moves on two accounts and three symbols."""

    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine(ENGINE_CONFIG)
        self.now = T0
        self.seq = 0
        self.close = dict.fromkeys(SYMBOLS, 100.0)
        self.equity = dict.fromkeys(ACCOUNTS, 100_000.0)
        self.state = dict.fromkeys(ACCOUNTS, "ACTIVE")
        self.unfilled: list[dict[str, Any]] = []
        self.fresh: list[tuple[str, dict[str, Any]]] = []

    def _next_id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}-{self.seq}"

    def _feed(self, topic: str, event: Any) -> None:
        """Process one event; remember each decision with its account's state when it was made."""
        for output in self.engine.process(topic, event):
            value = orjson.loads(encode(output))["value"]
            if output.topic == "halts":
                self.state[value["account"]] = value["state"]
            elif output.topic == "decisions":
                self.fresh.append((self.state[value["account"]], value))
                if value["action"] in ("ALLOW", "CLIP") and value["qty"] > 0:
                    self.unfilled.append(value)

    def _bar(self, symbol: str, ret: float, wick: float) -> None:
        self.now += MINUTE
        prev = self.close[symbol]
        close = round(prev * (1 + ret), 4)
        self.close[symbol] = close
        high = max(prev, close) * (1 + wick)
        low = min(prev, close) * (1 - wick)
        self._feed("bars", Bar(symbol=symbol, ts=self.now, open=prev, high=high, low=low, close=close))

    @initialize()
    def start(self) -> None:
        for account in ACCOUNTS:
            self._feed("equity", Equity(account=account, ts=self.now, equity=self.equity[account]))
        for symbol in SYMBOLS:
            self._bar(symbol, 0.0, 0.0)

    @rule(symbol=st.sampled_from(SYMBOLS), ret=st.floats(-0.08, 0.08), wick=st.floats(0, 0.03))
    def bar(self, symbol: str, ret: float, wick: float) -> None:
        self._bar(symbol, ret, wick)

    @rule(
        account=st.sampled_from(ACCOUNTS),
        symbol=st.sampled_from(SYMBOLS),
        wish=st.one_of(
            st.fixed_dictionaries({"target_notional": st.floats(-60_000, 60_000)}),
            st.fixed_dictionaries({"target_weight": st.floats(-0.6, 0.6)}),
            st.fixed_dictionaries({"direction": st.sampled_from(["LONG", "SHORT", "FLAT"])}),
        ),
    )
    def signal(self, account: str, symbol: str, wish: dict[str, Any]) -> None:
        sid = self._next_id("sig")
        self._feed("signals", Signal(signal_id=sid, account=account, symbol=symbol, ts=self.now, **wish))

    @precondition(lambda self: bool(self.unfilled))
    @rule(data=st.data(), fraction=st.sampled_from([1.0, 0.5]), slip=st.floats(-0.01, 0.01))
    def fill(self, data: st.DataObject, fraction: float, slip: float) -> None:
        decision = data.draw(st.sampled_from(self.unfilled))
        qty = decision["qty"] if fraction == 1.0 else math.floor(decision["qty"] * fraction) or decision["qty"]
        if qty == decision["qty"]:
            self.unfilled.remove(decision)
        else:
            decision["qty"] -= qty
        fill = Fill(
            fill_id=self._next_id("fill"),
            account=decision["account"],
            symbol=decision["symbol"],
            side=decision["side"],
            qty=qty,
            price=decision["price"] * (1 + slip),
            ts=self.now,
            decision_id=decision["decision_id"],
        )
        self._feed("fills", fill)

    @rule(account=st.sampled_from(ACCOUNTS), change=st.sampled_from([-0.2, -0.08, -0.04, -0.02, 0.01, 0.03, 0.06]))
    def equity_move(self, account: str, change: float) -> None:
        self.equity[account] = round(self.equity[account] * (1 + change), 2)
        self._feed("equity", Equity(account=account, ts=self.now, equity=self.equity[account]))

    @rule()
    def next_day(self) -> None:
        """The next event of each account rolls its trading day (HALTED -> ACTIVE)."""
        self.now += DAY
        self.unfilled.clear()  # pending quantity has long expired

    @invariant()
    def decisions_respect_state_exits_facts_and_caps(self) -> None:
        """Gate, exits, re-derivation from facts and caps, for every decision of the last step."""
        fresh, self.fresh = self.fresh, []
        for state_then, d in fresh:
            facts = d["facts"]
            assert facts["trading_state"] in (state_then, "UNKNOWN"), d
            if d["reason"] in ("no_price", "equity_unknown"):
                continue
            ctx = TradeContext.from_facts(facts)
            signed = _signed(d["action"], d["side"], d["qty"])
            pos = facts["filled_qty"] + facts["pending_qty"]
            if state_then in BLOCKED:
                assert _split(pos, signed)[1] == 0, d
            if d["origin"] in EXIT_ORIGINS:
                assert d["action"] == "ALLOW" and d["qty"] == abs(pos), d
            again = evaluate(ctx)
            assert (again.action, again.side, again.qty, again.layer, again.reason) == (
                d["action"],
                d["side"],
                d["qty"],
                d["layer"],
                d["reason"],
            ), d
            assert _cap_violations(ctx, again) == [], d


EngineMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_engine_decisions_when_any_event_sequence_then_state_exits_facts_and_caps_hold = EngineMachine.TestCase


# ----------------------------------------------------------------- replay determinism


@st.composite
def tapes(draw: st.DrawFn) -> list[bytes]:
    """A tape of bars, signals, fills, equity reports and a few bad lines, in event-time order."""
    lines: list[bytes] = []
    now = T0
    close = dict.fromkeys(SYMBOLS, 100.0)
    equity = dict.fromkeys(ACCOUNTS, 100_000.0)
    for account in ACCOUNTS:
        lines.append(
            orjson.dumps(
                {"topic": "equity", "key": account, "value": {"account": account, "ts": now, "equity": equity[account]}}
            )
        )
    for n in range(draw(st.integers(5, 40))):
        now += draw(st.sampled_from([MINUTE, 5 * MINUTE, 30 * MINUTE, DAY]))
        kind = draw(st.sampled_from(["bar", "bar", "signal", "fill", "equity", "bad"]))
        account, symbol = draw(st.sampled_from(ACCOUNTS)), draw(st.sampled_from(SYMBOLS))
        if kind == "bar":
            prev = close[symbol]
            close[symbol] = round(prev * (1 + draw(st.floats(-0.08, 0.08))), 4)
            hi, lo = max(prev, close[symbol]) * 1.01, min(prev, close[symbol]) * 0.99
            value: dict[str, Any] = {
                "symbol": symbol,
                "ts": now,
                "open": prev,
                "high": hi,
                "low": lo,
                "close": close[symbol],
            }
            lines.append(orjson.dumps({"topic": "bars", "key": symbol, "value": value}))
        elif kind == "signal":
            value = {
                "signal_id": f"s{n}",
                "account": account,
                "symbol": symbol,
                "ts": now,
                "target_notional": draw(st.floats(-60_000, 60_000)),
            }
            lines.append(orjson.dumps({"topic": "signals", "key": account, "value": value}))
        elif kind == "fill":
            value = {
                "fill_id": f"f{n}",
                "account": account,
                "symbol": symbol,
                "ts": now,
                "side": draw(st.sampled_from(["BUY", "SELL"])),
                "qty": float(draw(st.integers(1, 200))),
                "price": close[symbol],
            }
            lines.append(orjson.dumps({"topic": "fills", "key": account, "value": value}))
        elif kind == "equity":
            equity[account] = round(equity[account] * (1 + draw(st.floats(-0.09, 0.05))), 2)
            value = {"account": account, "ts": now, "equity": equity[account]}
            lines.append(orjson.dumps({"topic": "equity", "key": account, "value": value}))
        else:
            lines.append(draw(st.sampled_from([b"not json", b'{"topic": "bars", "key": "X", "value": {}}', b"[]"])))
    return lines


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tapes())
def test_replay_when_same_tape_twice_then_byte_identical_output(lines: list[bytes]) -> None:
    first, second = io.BytesIO(), io.BytesIO()

    replay(Engine(ENGINE_CONFIG), lines, first)
    replay(Engine(ENGINE_CONFIG), lines, second)

    assert first.getvalue() == second.getvalue()
    assert first.getvalue().count(b"\n") >= sum(1 for line in lines if not line.startswith(b'{"topic"'))


@FAST
@given(contexts())
def test_factor_clip_when_any_trade_then_only_a_trade_raising_beta_exposure_over_its_cap(ctx: TradeContext) -> None:
    # SPEC §6.2: a trade that moves beta exposure toward zero always passes the factor check; the layer
    # cuts only what would leave |B| above max(cap, |B| before).
    out = evaluate(ctx)

    for clip in (c for c in out.clips if c.layer == "factor"):
        assert ctx.beta and ctx.beta_cap is not None
        side = 1.0 if out.side == "BUY" else -1.0
        closing, _ = _split(ctx.projected_qty, side * out.qty)
        b0, _ = _beta_exposures(ctx, side * closing)
        requested = b0 + side * clip.before * ctx.beta
        assert abs(requested) > max(ctx.beta_cap, abs(b0)), (out, ctx)
        landed = b0 + side * clip.after * ctx.beta
        assert _le(abs(landed), max(ctx.beta_cap, abs(b0))), (out, ctx)
