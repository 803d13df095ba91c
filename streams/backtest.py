"""Backtests in DataFrames (SPEC §12, seed 000 Approaches 1 and 2): the guard engine in a vectorised backtest.

`run_frame(bars, targets, config)` turns a long frame of OHLC bars and a wide frame of target weights into the
input tape of `riskguard replay` — bars of a timestamp, the account's equity, then the targets of that timestamp
as signals — and runs it through `streams.tape.replay` itself (the very code path of the command), with a
simulated execution in between: every ALLOW/CLIP of the account in `enforce` mode is filled at the decision's
price (`fill="decision"`) or at the symbol's next bar open (`"next_open"`), with slippage and commission, the fill
carrying its `decision_id`; equity (cash + positions marked at the latest closes) goes in after each timestamp's
bars, so stop exits of those bars are in it. A NaN target sends nothing: the symbol keeps its current state,
including a stopped-out position (the re-entry veto holds while the target stays non-zero, seed 000 Decision 4).

The result carries the instruction ledger (seed 000 Decision 2: one row per decision, stops and flattens as
explicit exit rows), the fills, positions, equity and trading state per timestamp, the halts, and `to_tape()`,
the input tape it fed the engine: `riskguard replay` of that tape gives the same decisions.

`to_vectorbt(result)` gives the keyword arguments of `vectorbt.Portfolio.from_orders` that replay the fills.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

import numpy as np
import orjson
import pandas as pd
import yaml

from schemas.config import Config, ConfigError, config_from_dict, load_config
from schemas.outputs import Action, Decision, Halt, Mode
from schemas.timefmt import format_ts
from streams.core.engine import Engine, Output
from streams.tape import replay

__all__ = [
    "LEDGER_COLUMNS",
    "BacktestResult",
    "ConfigSource",
    "load_frame_config",
    "read_bars_csv",
    "read_yahoo_csv",
    "run_frame",
    "to_vectorbt",
]

LEDGER_COLUMNS = ("ts", "symbol", "action", "side", "qty", "price", "layer", "reason", "origin", "decision_id")
FILL_COLUMNS = ("ts", "symbol", "side", "qty", "price", "fee", "decision_id", "origin")
HALT_COLUMNS = ("ts", "state", "previous_state", "reason")
BAR_COLUMNS = ("ts", "symbol", "open", "high", "low", "close", "volume")
TRADED = (Action.ALLOW, Action.CLIP)
FillMode = Literal["decision", "next_open"]
ConfigSource = Config | Mapping[str, Any] | str | Path | None
"""A loaded Config, a mapping, a path to a YAML file, or YAML text (None: the defaults)."""


def load_frame_config(config: ConfigSource) -> Config:
    """A config from a loaded Config, a mapping, a path to a YAML file, or YAML text (None: the defaults)."""
    if config is None or isinstance(config, Config):
        return config if config is not None else config_from_dict({}, "<defaults>")
    if isinstance(config, Mapping):
        return config_from_dict(config, "<mapping>")
    if isinstance(config, Path) or ("\n" not in config and Path(config).is_file()):
        return load_config(config)
    data = yaml.safe_load(config)
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError("<yaml text>: the top level must be a mapping of keys (or a path to an existing file)")
    return config_from_dict(data, "<yaml text>")


def _consistent(frame: pd.DataFrame) -> pd.DataFrame:
    """Widen high/low to hold open and close (a few vendor bars do not), as `riskguard demo` does."""
    frame["high"] = frame[["high", "open", "close"]].max(axis=1)
    frame["low"] = frame[["low", "open", "close"]].min(axis=1)
    return frame


def read_bars_csv(path: str | Path, symbols: list[str] | None = None) -> pd.DataFrame:
    """A long bar frame from a CSV of `date|ts,symbol,open,high,low,close[,volume]` (the S&P 500 file)."""
    frame = pd.read_csv(path)
    if "ts" not in frame and "date" in frame:
        frame = frame.rename(columns={"date": "ts"})
    if symbols is not None:
        frame = frame[frame["symbol"].isin(symbols)]
    frame = frame.dropna(subset=["open", "high", "low", "close"]).copy()
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    if "volume" not in frame:
        frame["volume"] = 0.0
    frame["volume"] = frame["volume"].fillna(0.0).astype(float)
    return _consistent(frame[list(BAR_COLUMNS)].reset_index(drop=True))


def read_yahoo_csv(path: str | Path, symbol: str, start: str | None = None, end: str | None = None) -> pd.DataFrame:
    """A long bar frame of one symbol from a Yahoo Finance CSV (Date,Open,High,Low,Close,Adj Close,Volume).

    Unadjusted OHLC, as traded; `start` and `end` (inclusive dates) cut the span.
    """
    raw = pd.read_csv(path)
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(raw["Date"], utc=True),
            "symbol": symbol,
            "open": raw["Open"].astype(float),
            "high": raw["High"].astype(float),
            "low": raw["Low"].astype(float),
            "close": raw["Close"].astype(float),
            "volume": raw["Volume"].astype(float),
        }
    )
    if start is not None:
        frame = frame[frame["ts"] >= pd.Timestamp(start, tz="UTC")]
    if end is not None:
        frame = frame[frame["ts"] <= pd.Timestamp(end, tz="UTC")]
    return _consistent(frame.reset_index(drop=True))


def _ms(values: Any) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Epoch milliseconds (UTC; naive times are UTC) of timestamps, strings or datetimes."""
    stamps = pd.to_datetime(pd.Series(values), utc=True)
    return np.asarray(stamps.dt.as_unit("ms").astype("int64"), dtype=np.int64)


def _stamp(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


@dataclass(slots=True)
class _Book:
    """The simulated account: cash, signed quantities, average entry (for the balance) and the latest closes."""

    cash: float
    qty: dict[str, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)  # average entry price of the open quantity
    closes: dict[str, float] = field(default_factory=dict)
    realized: float = 0.0

    def apply(self, symbol: str, signed: float, price: float, fee: float) -> None:
        before = self.qty.get(symbol, 0.0)
        after = before + signed
        self.cash -= signed * price + fee
        self.realized -= fee
        if before != 0.0 and (before > 0) != (signed > 0):  # reduces (and maybe crosses)
            closed = min(abs(signed), abs(before))
            self.realized += closed * (price - self.cost[symbol]) * (1.0 if before > 0 else -1.0)
        if abs(after) < 1e-9:
            self.qty.pop(symbol, None)
            self.cost.pop(symbol, None)
        elif before == 0.0 or (before > 0) != (after > 0):  # opened, or crossed zero: entry at this price
            self.qty[symbol] = after
            self.cost[symbol] = price
        elif abs(after) > abs(before):  # added
            self.cost[symbol] = (self.cost[symbol] * abs(before) + price * abs(signed)) / abs(after)
            self.qty[symbol] = after
        else:
            self.qty[symbol] = after

    def equity(self) -> float:
        return self.cash + math.fsum(q * self.closes[s] for s, q in self.qty.items())

    def balance(self) -> float:
        """Closed P&L only: cash plus the open positions at their entry prices."""
        return self.cash + math.fsum(q * self.cost[s] for s, q in self.qty.items())


class _Discard(io.RawIOBase):
    """A sink for the encoded outputs of `replay` (the result keeps the objects)."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(data)


def _executable(decision: Decision) -> bool:
    """What a venue executes: an ALLOW or CLIP in enforce mode, with a side and a quantity."""
    traded = decision.action in TRADED and decision.mode is Mode.ENFORCE
    return traded and decision.qty > 0 and decision.side is not None


@dataclass
class BacktestResult:
    """What `run_frame` returns; every frame is indexed or stamped in UTC."""

    ledger: pd.DataFrame
    fills: pd.DataFrame
    positions: pd.DataFrame
    equity: pd.Series
    cash: pd.Series
    state: pd.Series
    halts: pd.DataFrame
    close: pd.DataFrame
    open: pd.DataFrame
    outputs: list[Output]
    lines: list[bytes]
    initial_balance: float
    account: str
    commission_bps: float
    slippage_bps: float
    fill: FillMode
    stats: dict[str, int]

    @property
    def decisions(self) -> list[Decision]:
        """The account's decisions, as the engine published them."""
        return [o.value for o in self.outputs if isinstance(o.value, Decision)]

    def to_tape(self, path: str | Path | IO[bytes] | None = None) -> bytes:
        """The input tape fed to the engine (JSON Lines); written to `path` too when given."""
        data = b"".join(line + b"\n" for line in self.lines)
        if isinstance(path, str | Path):
            Path(path).write_bytes(data)
        elif path is not None:
            path.write(data)
        return data

    def drawdown(self) -> pd.Series:
        """Drawdown of the equity from its running peak, as a fraction (<= 0)."""
        peak = self.equity.cummax()
        return self.equity / peak - 1.0


class _Simulation:
    """Yields the tape line by line to `replay`, executing what each line's outputs allow before the next."""

    def __init__(
        self,
        bars: pd.DataFrame,
        targets: pd.DataFrame,
        initial_balance: float,
        account: str,
        fill: FillMode,
        commission_bps: float,
        slippage_bps: float,
    ) -> None:
        self.account = account
        self.fill_mode = fill
        self.commission = commission_bps / 10_000.0
        self.slippage = slippage_bps / 10_000.0
        self.book = _Book(cash=float(initial_balance))
        self.initial_balance = float(initial_balance)
        self.lines: list[bytes] = []
        self.outputs: list[Output] = []
        self.fills: list[tuple[int, str, str, float, float, float, str, str]] = []
        self.queued: dict[str, list[Decision]] = {}  # next_open: decisions waiting for the symbol's next bar
        self._now: list[Decision] = []  # fill="decision": decisions of the line just processed
        self.fill_count = 0
        self.state = "ACTIVE"
        self.now = 0

        bar_ms = _ms(bars["ts"])
        frame = pd.DataFrame(
            {
                "ms": bar_ms,
                "symbol": bars["symbol"].astype(str).to_numpy(),
                "open": bars["open"].to_numpy(dtype=float),
                "high": bars["high"].to_numpy(dtype=float),
                "low": bars["low"].to_numpy(dtype=float),
                "close": bars["close"].to_numpy(dtype=float),
                "volume": (bars["volume"] if "volume" in bars else pd.Series(0.0, index=bars.index)).to_numpy(
                    dtype=float
                ),
            }
        ).sort_values(["ms", "symbol"], kind="stable")
        self.bars = frame
        target_ms = _ms(targets.index) if len(targets.index) else np.empty(0, dtype=np.int64)
        self.targets = pd.DataFrame(targets.to_numpy(dtype=float), index=target_ms, columns=[str(c) for c in targets])
        if not self.targets.index.is_unique:
            raise ValueError("targets: one row per timestamp (the index has duplicates)")
        self.times = sorted(set(frame["ms"].tolist()) | set(target_ms.tolist()))
        self.rows: list[tuple[int, float, dict[str, float], str, float]] = []  # ms, equity, qty, state, cash

    # --- the tape -----------------------------------------------------------------------------------------
    def _line(self, topic: str, key: str | None, value: dict[str, Any]) -> bytes:
        line = orjson.dumps({"topic": topic, "key": key, "value": value})
        self.lines.append(line)
        return line

    def lines_out(self) -> Iterator[bytes]:
        bars_at = {ms: group for ms, group in self.bars.groupby("ms", sort=True)}
        columns = list(self.targets.columns)
        for ms in self.times:
            self.now = ms
            ts = format_ts(ms)
            group = bars_at.get(ms)
            if group is not None:
                records = group.to_dict("records")
                if self.fill_mode == "next_open":
                    for record in records:
                        for decision in self.queued.pop(record["symbol"], []):
                            yield self._fill_line(decision, float(record["open"]), ms)
                for record in records:
                    symbol = record["symbol"]
                    value = {
                        "symbol": symbol,
                        "ts": ts,
                        "open": record["open"],
                        "high": record["high"],
                        "low": record["low"],
                        "close": record["close"],
                        "volume": record["volume"],
                    }
                    self.book.closes[symbol] = float(record["close"])
                    yield self._line("bars", symbol, value)
                    yield from self._execute_now()
                equity = max(self.book.equity(), 0.0)
                value = {
                    "account": self.account,
                    "ts": ts,
                    "equity": equity,
                    "balance": max(self.book.balance(), 0.0),
                    "cash": self.book.cash,
                }
                yield self._line("equity", self.account, value)
                yield from self._execute_now()
            if ms in self.targets.index:
                row = self.targets.loc[ms].to_numpy()
                for symbol, weight in zip(columns, row, strict=True):
                    if math.isnan(weight):
                        continue  # NaN: keep the current state (seed 000 Approach 1)
                    signal = {
                        "signal_id": f"{self.account}:{ms}:{symbol}",
                        "account": self.account,
                        "symbol": symbol,
                        "ts": ts,
                        "target_weight": float(weight),
                    }
                    yield self._line("signals", self.account, signal)
                    yield from self._execute_now()
            self.rows.append((ms, self.book.equity(), dict(self.book.qty), self.state, self.book.cash))

    # --- execution ----------------------------------------------------------------------------------------
    def on_output(self, output: Output) -> None:
        self.outputs.append(output)
        value = output.value
        if isinstance(value, Halt) and value.account == self.account:
            self.state = str(value.state)
        elif isinstance(value, Decision) and value.account == self.account and _executable(value):
            if self.fill_mode == "decision":
                self._now.append(value)
            else:
                self.queued.setdefault(value.symbol, []).append(value)

    def _execute_now(self) -> Iterator[bytes]:
        while self._now:
            decision = self._now.pop(0)
            yield self._fill_line(decision, decision.price, self.now)

    def _fill_line(self, decision: Decision, base: float, ms: int) -> bytes:
        side = str(decision.side)
        sign = 1.0 if side == "BUY" else -1.0
        price = base * (1.0 + sign * self.slippage)
        fee = abs(decision.qty * price) * self.commission
        self.book.apply(decision.symbol, sign * decision.qty, price, fee)
        self.fill_count += 1
        fill_id = f"{self.account}-fill-{self.fill_count}"
        value: dict[str, Any] = {
            "fill_id": fill_id,
            "account": self.account,
            "symbol": decision.symbol,
            "side": side,
            "qty": decision.qty,
            "price": price,
            "ts": format_ts(ms),
            "decision_id": decision.decision_id,
        }
        if fee > 0:
            value["fee"] = fee
        self.fills.append(
            (ms, decision.symbol, side, decision.qty, price, fee, decision.decision_id, str(decision.origin))
        )
        return self._line("fills", self.account, value)


def run_frame(
    bars: pd.DataFrame,
    targets: pd.DataFrame,
    config: ConfigSource,
    initial_balance: float = 100_000,
    account: str = "bt",
    fill: FillMode = "decision",
    commission_bps: float = 0.0,
    slippage_bps: float = 0.0,
) -> BacktestResult:
    """Run target weights through the guard engine with a simulated execution (SPEC §12); see the module doc."""
    if fill not in ("decision", "next_open"):
        raise ValueError(f"fill must be 'decision' or 'next_open', not {fill!r}")
    if commission_bps < 0 or slippage_bps < 0:
        raise ValueError("commission_bps and slippage_bps must be >= 0")
    missing = [c for c in BAR_COLUMNS if c not in bars.columns and c != "volume"]
    if missing:
        raise ValueError(f"bars: missing columns {missing} (need {', '.join(BAR_COLUMNS)})")
    cfg = load_frame_config(config)
    sim = _Simulation(bars, targets, initial_balance, account, fill, commission_bps, slippage_bps)
    engine = Engine(cfg)
    replay(engine, sim.lines_out(), cast(IO[bytes], _Discard()), on_output=sim.on_output)
    return _result(sim, engine)


def _result(sim: _Simulation, engine: Engine) -> BacktestResult:
    decisions = [o.value for o in sim.outputs if isinstance(o.value, Decision) and o.value.account == sim.account]
    ledger = pd.DataFrame(
        {
            "ts": pd.to_datetime([d.ts for d in decisions], unit="ms", utc=True),
            "symbol": [d.symbol for d in decisions],
            "action": [str(d.action) for d in decisions],
            "side": [None if d.side is None else str(d.side) for d in decisions],
            "qty": np.array([d.qty for d in decisions], dtype=float),
            "price": np.array([d.price for d in decisions], dtype=float),
            "layer": [str(d.layer) for d in decisions],
            "reason": [d.reason for d in decisions],
            "origin": [str(d.origin) for d in decisions],
            "decision_id": [d.decision_id for d in decisions],
        },
        columns=list(LEDGER_COLUMNS),
    )
    fills = pd.DataFrame(sim.fills, columns=list(FILL_COLUMNS))
    fills["ts"] = pd.to_datetime(fills["ts"].astype("int64"), unit="ms", utc=True)
    halts_list = [o.value for o in sim.outputs if isinstance(o.value, Halt) and o.value.account == sim.account]
    halts = pd.DataFrame(
        {
            "ts": pd.to_datetime([h.ts for h in halts_list], unit="ms", utc=True),
            "state": [str(h.state) for h in halts_list],
            "previous_state": [str(h.previous_state) for h in halts_list],
            "reason": [h.reason for h in halts_list],
        },
        columns=list(HALT_COLUMNS),
    )
    index = pd.DatetimeIndex(pd.to_datetime([r[0] for r in sim.rows], unit="ms", utc=True), name="ts")
    symbols = sorted(set(sim.bars["symbol"]) | set(sim.targets.columns))
    positions = pd.DataFrame([r[2] for r in sim.rows], index=index, columns=symbols, dtype=float).fillna(0.0)
    equity = pd.Series([r[1] for r in sim.rows], index=index, name="equity", dtype=float)
    state = pd.Series([r[3] for r in sim.rows], index=index, name="state", dtype=object)
    wide_close = sim.bars.pivot(index="ms", columns="symbol", values="close")
    wide_open = sim.bars.pivot(index="ms", columns="symbol", values="open")
    for wide in (wide_close, wide_open):
        wide.index = pd.DatetimeIndex(pd.to_datetime(wide.index, unit="ms", utc=True), name="ts")
        wide.columns.name = None
    return BacktestResult(
        ledger=ledger,
        fills=fills,
        positions=positions,
        equity=equity,
        cash=pd.Series([r[4] for r in sim.rows], index=index, name="cash", dtype=float),
        state=state,
        halts=halts,
        close=wide_close.reindex(index).ffill(),
        open=wide_open.reindex(index),
        outputs=sim.outputs,
        lines=sim.lines,
        initial_balance=sim.initial_balance,
        account=sim.account,
        commission_bps=sim.commission * 10_000.0,
        slippage_bps=sim.slippage * 10_000.0,
        fill=sim.fill_mode,
        stats=dict(sorted(engine.stats.items())),
    )


def to_vectorbt(result: BacktestResult) -> dict[str, Any]:
    """Keyword arguments of `vectorbt.Portfolio.from_orders` that replay the result's fills, one order each.

    `size` is the signed quantity of each fill and `price` its price (which holds the slippage), with
    `size_type="amount"`, the commission rate as `fees`, one cash pool for the book (`cash_sharing`) and sells
    before buys within a row (`call_seq="auto"`). vectorbt takes one order per row and column: when a symbol
    fills more than once at a timestamp (an entry at the next open stopped out on the same bar), the earlier
    fills get rows of their own a nanosecond apart just before it, so the value at every timestamp of the result
    is the result's equity (`portfolio.value().reindex(result.equity.index)`), as long as the simulated cash
    stays >= 0 (vectorbt does not lend; the guard's `buying_power` rule keeps it so).
    """
    close = result.close
    fills = result.fills
    if len(fills):
        count = fills.groupby(["ts", "symbol"], sort=False)["qty"].transform("size")
        order = fills.groupby(["ts", "symbol"], sort=False).cumcount()
        at = fills["ts"] - pd.to_timedelta(count - 1 - order, unit="ns")
        fills = fills.assign(at=at, signed=np.where(fills["side"] == "BUY", 1.0, -1.0) * fills["qty"])
        rows = close.index.union(pd.DatetimeIndex(fills["at"]).unique())
    else:
        fills = fills.assign(at=fills["ts"], signed=fills["qty"])
        rows = close.index
    marks = close.reindex(rows).bfill().ffill()
    size = pd.DataFrame(np.nan, index=rows, columns=close.columns)
    price = marks.copy()
    if len(fills):
        size.update(fills.pivot(index="at", columns="symbol", values="signed"))
        price.update(fills.pivot(index="at", columns="symbol", values="price"))
    return {
        "close": marks,
        "size": size,
        "price": price,
        "size_type": "amount",
        "fees": result.commission_bps / 10_000.0,
        "init_cash": result.initial_balance,
        "cash_sharing": True,
        "group_by": True,
        "call_seq": "auto",
        "freq": "1D",
    }
