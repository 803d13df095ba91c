"""NautilusTrader with the guard in the loop (SPEC §12, seed 000 Approach 2): a strategy that asks before it orders.

`GuardedTargetStrategy` trades target weights on bars. Before each order it asks riskguard and submits only what
the guard allows: an ALLOW as is, a CLIP with the clipped quantity, a DENY or NOOP not at all. The guard's own
decisions — stop-loss, take-profit and trailing exits on a bar, the flatten of every position when the account
halts — are submitted as market orders too, and every Nautilus fill goes back to the guard carrying its
`decision_id`. While the account is HALTED or SHUTDOWN the guard denies every entry, so the strategy's entries
stop until the trading day rolls (or a signed RESUME).

Two ways to reach the guard, one interface (`send(topic, key, value) -> [Decision | Halt]`):

- `InProcessGuard` (backtests): the engine of `riskguard replay` in the same process, fed the same envelopes a
  tape holds; `to_tape()` gives that tape, and `riskguard replay` of it decides the same.
- `LiveGuard` (live trading): `streams.client.SyncGuardClient` (SPEC §11): signals are `check`ed, fills and
  equity published; bars come from the market feed, and the guard's own exits and halts arrive through
  `client.stream([account])`.

`run_backtest(bars, targets, config)` runs a Nautilus `BacktestEngine` on a long bar frame (as
`streams.backtest.run_frame` takes) with this strategy and the in-process guard.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import orjson
import pandas as pd
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.identifiers import ClientOrderId, InstrumentId, Symbol, TraderId, Venue
from nautilus_trader.model.instruments import Equity as NautilusEquity
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.persistence.wranglers import BarDataWrangler
from nautilus_trader.trading.strategy import Strategy

from schemas.inputs import Equity, Fill, Signal
from schemas.outputs import Decision, Halt
from schemas.timefmt import format_ts
from streams.backtest import ConfigSource, load_frame_config
from streams.core.engine import Engine
from streams.tape import decode_line

__all__ = ["GuardedTargetStrategy", "GuardedTargetsConfig", "InProcessGuard", "LiveGuard", "run_backtest"]

VENUE = "SIM"
GuardOutput = Decision | Halt


class GuardBackend(Protocol):
    """Where the strategy's events go and the guard's answers come from."""

    def send(self, topic: str, key: str | None, value: dict[str, Any]) -> list[GuardOutput]: ...


class InProcessGuard:
    """The replay engine in-process: each event is a tape line, decoded and decided as `riskguard replay` does."""

    def __init__(self, config: ConfigSource) -> None:
        self.engine = Engine(load_frame_config(config))
        self.lines: list[bytes] = []
        self.outputs: list[GuardOutput] = []

    def send(self, topic: str, key: str | None, value: dict[str, Any]) -> list[GuardOutput]:
        line = orjson.dumps({"topic": topic, "key": key, "value": value})
        self.lines.append(line)
        _, _, model = decode_line(line)
        answers = [o.value for o in self.engine.process(topic, model) if isinstance(o.value, Decision | Halt)]
        self.outputs += answers
        return answers

    def to_tape(self) -> bytes:
        """The input tape the guard saw, in order (JSON Lines)."""
        return b"".join(line + b"\n" for line in self.lines)


class _SyncClient(Protocol):
    def check(self, signal: Signal | Mapping[str, Any], timeout: float | None = None) -> Decision: ...
    def send_fill(self, fill: Fill) -> None: ...
    def send_equity(self, equity: Equity) -> None: ...


class LiveGuard:
    """The deployed guard through `SyncGuardClient` (SPEC §11); its own exits and halts through `stream`.

    `follow()` starts following the account's decisions and halts (on the client's event loop); what arrived
    since the last call is returned with the answer of the next `send`, so exits decided on a bar, and the
    flatten of a halt, reach the strategy at its next event.
    """

    def __init__(self, client: _SyncClient, account: str, timeout: float | None = None) -> None:
        self.client = client
        self.account = account
        self.timeout = timeout
        self.arrived: queue.Queue[GuardOutput] = queue.Queue()
        self.asked: set[str] = set()  # decisions the strategy asked for itself (not to be executed twice)
        self._follower: Any = None

    def follow(self) -> None:
        """Start following the account's decisions and halts (a `SyncGuardClient`: on its loop)."""
        inner = getattr(self.client, "client", None)
        loop = getattr(self.client, "_loop", None)
        if inner is None or loop is None:
            raise TypeError("follow() needs a streams.client.SyncGuardClient")

        async def run() -> None:
            async for item in inner.stream([self.account]):
                self.arrived.put(item)

        self._follower = asyncio.run_coroutine_threadsafe(run(), loop)

    def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()

    def _drain(self) -> list[GuardOutput]:
        items: list[GuardOutput] = []
        while True:
            try:
                item = self.arrived.get_nowait()
            except queue.Empty:
                return items
            if isinstance(item, Decision) and item.decision_id in self.asked:
                continue  # the answer to a `check`, already handled
            items.append(item)

    def send(self, topic: str, key: str | None, value: dict[str, Any]) -> list[GuardOutput]:
        if topic == "signals":
            decision = self.client.check(Signal.model_validate(value), self.timeout)
            self.asked.add(decision.decision_id)
            return [*self._drain(), decision]
        if topic == "fills":
            self.client.send_fill(Fill.model_validate(value))
        elif topic == "equity":
            self.client.send_equity(Equity.model_validate(value))
        # bars: the market feed publishes them to the guard; nothing to send
        return self._drain()


class GuardedTargetsConfig(StrategyConfig, frozen=True):
    """The instruments' bar types (one per symbol) and the guard's account name."""

    bar_types: list[str]
    account: str = "nt"


@dataclass
class _Book:
    cash: float
    qty: dict[str, float] = field(default_factory=dict)
    closes: dict[str, float] = field(default_factory=dict)

    def equity(self) -> float:
        return self.cash + math.fsum(q * self.closes[s] for s, q in self.qty.items() if q)


class GuardedTargetStrategy(Strategy):  # type: ignore[misc]
    """Target weights (a wide frame: timestamps x symbols, NaN = no signal), each order asked of the guard first.

    Per bar timestamp, once every instrument's bar has arrived: the bars go to the guard (stop exits are
    ordered at once), then the account's equity (cash plus positions at the closes; a halt's flatten is
    ordered), then that timestamp's targets as signals, each order only as the guard allows it.
    """

    def __init__(
        self, config: GuardedTargetsConfig, guard: GuardBackend, targets: pd.DataFrame, initial_balance: float
    ) -> None:
        super().__init__(config)
        self.guard = guard
        self.account_name = config.account
        self.bar_types = [BarType.from_str(text) for text in config.bar_types]
        self.symbols = {bt.instrument_id.symbol.value: bt.instrument_id for bt in self.bar_types}
        stamps = pd.to_datetime(pd.Series(targets.index), utc=True).dt.as_unit("ms").astype("int64")
        rows: list[dict[str, float]] = [
            {str(k): float(v) for k, v in row.items()} for row in targets.to_dict("records")
        ]
        self.targets = {int(ms): row for ms, row in zip(stamps, rows, strict=True)}
        self.book = _Book(cash=float(initial_balance))
        self.orders: dict[ClientOrderId, str] = {}  # client order id -> decision id
        self.decided: list[Decision] = []
        self.halts: list[Halt] = []
        self.submitted: list[tuple[int, str, str, float, str]] = []  # ts, symbol, side, qty, origin
        self.trading_state = "ACTIVE"
        self._ts: int | None = None
        self._seen: set[str] = set()
        self._fills = 0
        self._lock = threading.Lock()

    def on_start(self) -> None:
        for bar_type in self.bar_types:
            self.subscribe_bars(bar_type)

    def on_bar(self, bar: Bar) -> None:
        ms = bar.ts_event // 1_000_000
        if self._ts is not None and ms != self._ts:
            self._close_timestamp()  # an instrument without a bar at the last timestamp
        self._ts = ms
        symbol = bar.bar_type.instrument_id.symbol.value
        value = {
            "symbol": symbol,
            "ts": format_ts(ms),
            "open": float(bar.open),
            "high": float(bar.high),
            "low": float(bar.low),
            "close": float(bar.close),
            "volume": float(bar.volume),
        }
        self.book.closes[symbol] = float(bar.close)
        self._handle(self.guard.send("bars", symbol, value))
        self._seen.add(symbol)
        if len(self._seen) == len(self.symbols):
            self._close_timestamp()

    def on_stop(self) -> None:
        if self._ts is not None and self._seen:
            self._close_timestamp()

    def _close_timestamp(self) -> None:
        ms = self._ts
        if ms is None:
            return
        self._seen = set()
        self._ts = None
        ts = format_ts(ms)
        equity = {
            "account": self.account_name,
            "ts": ts,
            "equity": max(self.book.equity(), 0.0),
            "cash": self.book.cash,
        }
        self._handle(self.guard.send("equity", self.account_name, equity))
        row = self.targets.get(ms)
        if row is None:
            return
        for symbol in sorted(row):
            weight = row[symbol]
            if weight is None or math.isnan(weight) or symbol not in self.symbols:
                continue
            signal = {
                "signal_id": f"{self.account_name}:{ms}:{symbol}",
                "account": self.account_name,
                "symbol": symbol,
                "ts": ts,
                "target_weight": float(weight),
            }
            self._handle(self.guard.send("signals", self.account_name, signal))

    def _handle(self, answers: list[GuardOutput]) -> None:
        for answer in answers:
            if isinstance(answer, Halt):
                if answer.account == self.account_name:
                    self.halts.append(answer)
                    self.trading_state = str(answer.state)
                continue
            if answer.account != self.account_name:
                continue
            self.decided.append(answer)
            if answer.action in ("ALLOW", "CLIP") and answer.mode == "enforce" and answer.qty > 0 and answer.side:
                self._submit(answer)

    def _submit(self, decision: Decision) -> None:
        instrument_id = self.symbols[decision.symbol]
        instrument = self.cache.instrument(instrument_id)
        side = OrderSide.BUY if decision.side == "BUY" else OrderSide.SELL
        order = self.order_factory.market(instrument_id, side, instrument.make_qty(decision.qty))
        self.orders[order.client_order_id] = decision.decision_id
        self.submitted.append((decision.ts, decision.symbol, str(decision.side), decision.qty, str(decision.origin)))
        self.submit_order(order)

    def on_order_filled(self, event: OrderFilled) -> None:
        symbol = event.instrument_id.symbol.value
        qty = float(event.last_qty)
        price = float(event.last_px)
        fee = float(event.commission) if event.commission is not None else 0.0
        signed = qty if event.order_side == OrderSide.BUY else -qty
        self.book.cash -= signed * price + fee
        self.book.qty[symbol] = self.book.qty.get(symbol, 0.0) + signed
        self._fills += 1
        value: dict[str, Any] = {
            "fill_id": f"{self.account_name}-nt-{self._fills}",
            "account": self.account_name,
            "symbol": symbol,
            "side": "BUY" if signed > 0 else "SELL",
            "qty": qty,
            "price": price,
            "ts": format_ts(event.ts_event // 1_000_000),
        }
        if fee > 0:
            value["fee"] = fee
        decision_id = self.orders.get(event.client_order_id)
        if decision_id is not None:
            value["decision_id"] = decision_id
        self._handle(self.guard.send("fills", self.account_name, value))


@dataclass
class NautilusRun:
    """A finished Nautilus backtest with the guard: the strategy (its decisions, halts, orders) and the guard."""

    strategy: GuardedTargetStrategy
    guard: InProcessGuard
    engine: BacktestEngine

    @property
    def halts(self) -> pd.DataFrame:
        rows = [(h.ts, str(h.state), str(h.previous_state), h.reason) for h in self.strategy.halts]
        frame = pd.DataFrame(rows, columns=["ts", "state", "previous_state", "reason"])
        frame["ts"] = pd.to_datetime(frame["ts"].astype("int64"), unit="ms", utc=True)
        return frame

    @property
    def ledger(self) -> pd.DataFrame:
        rows = [
            (
                d.ts,
                d.symbol,
                str(d.action),
                d.side and str(d.side),
                d.qty,
                d.price,
                str(d.layer),
                d.reason,
                str(d.origin),
            )
            for d in self.strategy.decided
        ]
        columns = ["ts", "symbol", "action", "side", "qty", "price", "layer", "reason", "origin"]
        frame = pd.DataFrame(rows, columns=columns)
        frame["ts"] = pd.to_datetime(frame["ts"].astype("int64"), unit="ms", utc=True)
        return frame

    def fills(self) -> pd.DataFrame:
        """Nautilus's own fill report."""
        report: pd.DataFrame = self.engine.trader.generate_fills_report()
        return report


def _instrument(symbol: str, prices: pd.Series) -> NautilusEquity:
    decimals = max(2, min(9, int(max(len(f"{p:.9f}".rstrip("0").split(".")[1]) for p in prices.head(500)))))
    return NautilusEquity(
        instrument_id=InstrumentId(Symbol(symbol), Venue(VENUE)),
        raw_symbol=Symbol(symbol),
        currency=USD,
        price_precision=decimals,
        price_increment=Price(10.0**-decimals, decimals),
        lot_size=Quantity.from_int(1),
        ts_event=0,
        ts_init=0,
    )


def run_backtest(
    bars: pd.DataFrame,
    targets: pd.DataFrame,
    config: ConfigSource,
    initial_balance: float = 100_000,
    account: str = "nt",
    leverage: float = 2.0,
) -> NautilusRun:
    """A Nautilus backtest of the target weights on the bars, every order asked of the in-process guard.

    One simulated venue (`SIM`, netting, a margin account in USD with `leverage`), one equity instrument per
    symbol, daily bars from the long frame (ts, symbol, open, high, low, close, volume) with `bar_execution`:
    a market order submitted on a bar fills at that bar's close.
    """
    guard = InProcessGuard(config)
    engine = BacktestEngine(
        config=BacktestEngineConfig(trader_id=TraderId("RISKGUARD-001"), logging=LoggingConfig(bypass_logging=True))
    )
    venue = Venue(VENUE)
    engine.add_venue(
        venue=venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        starting_balances=[Money(initial_balance, USD)],
        base_currency=USD,
        default_leverage=Decimal(str(leverage)),
    )
    bar_types = []
    frame = bars.copy()
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    for symbol, group in frame.groupby("symbol", sort=True):
        instrument = _instrument(str(symbol), group["close"])
        engine.add_instrument(instrument)
        bar_type = BarType.from_str(f"{instrument.id}-1-DAY-LAST-EXTERNAL")
        data = group.set_index("ts")[["open", "high", "low", "close", "volume"]].astype(float)
        data = data.round(instrument.price_precision)
        engine.add_data(BarDataWrangler(bar_type, instrument).process(data))
        bar_types.append(str(bar_type))
    strategy = GuardedTargetStrategy(
        GuardedTargetsConfig(bar_types=bar_types, account=account), guard, targets, initial_balance
    )
    engine.add_strategy(strategy)
    engine.run()
    return NautilusRun(strategy, guard, engine)
