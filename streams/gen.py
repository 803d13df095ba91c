"""Synthetic input tapes for `riskguard gen` (SPEC §9): a seeded sector factor market, accounts
that trade it, and fills that follow the guard's own decisions.

Market. Symbols ``S000``.. are dealt round-robin to the 11 GICS sectors. The log return of
symbol ``i`` (sector ``s``) over one bar is ``beta_i·m + gamma_i·f_s + sigma_i·e_i`` with
independent standard-normal market, sector and idiosyncratic shocks. Each name draws a daily vol
in 1–2 % and the shares of its variance explained by the market (20–35 %) and its sector
(25–45 %), so names of one sector correlate at about 0.6 and names of different sectors at
about 0.3. Intraday vol follows a U-shaped profile (scaled so the daily vol is kept), each day
opens with an overnight gap (a quarter of the daily variance), and when ``days >= 3`` the middle
day carries a market sell-off of 3–5 % in its afternoon (market vol and volume doubled), so that
drawdown guards have something to react to. Prices are in cents; highs and lows extend the
open/close range by half-normal wicks; volume follows dollar volume, the intraday profile and
the size of the move.

Calendar. Weekdays from ``start`` (no holidays); the session opens at 09:30 America/New_York
(daylight saving included) and has ``session_minutes * 60 // bar_seconds`` bars. Every ``ts`` is
integer UTC epoch milliseconds of the bar's start.

Accounts. ``A000``.. each trade a random universe of 20–60 symbols with a style (momentum or
mean reversion on the last 30 bars), a long/short bias and a leverage of 0.5–4, emitting about
one signal per ``signal_every`` bars: a signed ``target_notional`` or ``target_weight`` (mostly
0.4–4 % of equity times the leverage, one in ten 8–30 % so that caps bite) or a ``direction``
(one in four ``FLAT``). An in-loop `Engine` sees every emitted event; each ALLOW/CLIP decision
with a quantity is filled ``fill_delay_bars`` bars later at that bar's open with a slippage of
about a basis point (kept inside the bar's range) and a per-share fee, so fills reference real
decision ids. Decisions of a day's last bars fill at the next day's open; those of the tape's
last ``fill_delay_bars`` bars stay unfilled. Accounts book cash and positions from their fills
and report ``equity`` (cash + quantity × latest close, in cents), ``balance`` (initial +
realised P&L − fees) and ``cash`` at the first bar of every day and every ``equity_every`` bars
(staggered by account). Fills are generated whatever the config's ``mode``: in shadow mode they
show what following the guard would have done.

Order within one timestamp: bars (by symbol), fills due, equity, signals.

Determinism. Random numbers come only from numpy ``Generator(PCG64)`` streams spawned from
``seed``: one for the market (so prices do not depend on the number of accounts), one for the
accounts' set-up, one for signals and one for fills. Iteration is over lists and
insertion-ordered dicts only and floats are serialised by orjson, so the same parameters and
config give byte-identical tapes. (numpy's vectorised ``exp`` may differ in the last bit
between CPU families, which can move a price by a cent across machines; on one machine and
numpy version the bytes never change.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import IO, Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import orjson
from numpy.random import PCG64, Generator, SeedSequence

from schemas.config import Config, load_config
from schemas.inputs import INPUT_MODELS
from schemas.outputs import Decision
from streams.core.engine import Engine

FloatArray = npt.NDArray[np.float64]

SECTORS: tuple[str, ...] = (
    "Information Technology",
    "Health Care",
    "Financials",
    "Consumer Discretionary",
    "Communication Services",
    "Industrials",
    "Consumer Staples",
    "Energy",
    "Utilities",
    "Real Estate",
    "Materials",
)
"""GICS sectors; symbol ``i`` belongs to ``SECTORS[i % 11]``."""

STRATEGIES: tuple[tuple[str, float], ...] = (
    ("momentum", 1.0),
    ("mean_reversion", -1.0),
    ("trend", 0.6),
    ("stat_arb", -0.6),
)
"""Strategy names with the sign and weight they give the last 30 bars' move."""

PROGRESS_EVERY = 10_000
"""`write_tape` reports progress every this many lines (and once at the end)."""

_SESSION_ZONE = ZoneInfo("America/New_York")
_SESSION_OPEN = time(9, 30)
_MARKET_VOL = 0.008  # daily vol of the market factor (its loadings are the betas)
_SECTOR_VOL = 0.008  # daily vol of each sector factor
_OVERNIGHT_SHARE = 0.25  # share of the daily variance in the overnight gap
_WICK = 0.5  # high/low wick, in bar standard deviations (half-normal)
_SHOCK_WINDOW = (0.45, 0.85)  # part of the shock day's session that sells off
_SHOCK_RANGE = (0.03, 0.05)  # market-factor fall on the shock day
_MOMENTUM_BARS = 30
_FEE_PER_SHARE = 0.0035
_MIN_FEE = 0.35
_MAX_FEE_RATE = 0.01  # of the fill's notional
_SLIPPAGE = 1e-4  # one basis point: the fill's adverse slip is N(0.5, 1) of it


@dataclass(frozen=True)
class GenParams:
    """Size, calendar and behaviour of a synthetic tape."""

    symbols: int = 500
    accounts: int = 50
    days: int = 1
    bar_seconds: int = 60
    session_minutes: int = 390
    start: str = "2024-01-02"
    seed: int = 7
    signal_every: int = 15
    equity_every: int = 5
    fill_delay_bars: int = 1
    initial_equity: float = 1_000_000.0

    def __post_init__(self) -> None:
        positive = {
            "symbols": self.symbols,
            "days": self.days,
            "bar_seconds": self.bar_seconds,
            "session_minutes": self.session_minutes,
            "signal_every": self.signal_every,
            "equity_every": self.equity_every,
            "fill_delay_bars": self.fill_delay_bars,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.accounts < 0:
            raise ValueError(f"accounts must be >= 0, got {self.accounts}")
        if self.bars_per_day < 1:
            raise ValueError("session_minutes * 60 must hold at least one bar of bar_seconds")
        if not (math.isfinite(self.initial_equity) and self.initial_equity > 0):
            raise ValueError(f"initial_equity must be positive and finite, got {self.initial_equity}")
        try:
            date.fromisoformat(self.start)
        except ValueError:
            raise ValueError(f"start must be an ISO date (YYYY-MM-DD), got {self.start!r}") from None

    @property
    def bars_per_day(self) -> int:
        """Bars per symbol and session."""
        return self.session_minutes * 60 // self.bar_seconds

    @property
    def bar_lines(self) -> int:
        """Number of bar lines in the tape (a lower bound of its length, for progress bars)."""
        return self.symbols * self.days * self.bars_per_day


def _names(prefix: str, count: int) -> list[str]:
    width = max(3, len(str(count - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(count)]


def symbol_names(params: GenParams) -> list[str]:
    """The tape's symbols, in bar order."""
    return _names("S", params.symbols)


def account_names(params: GenParams) -> list[str]:
    """The tape's accounts."""
    return _names("A", params.accounts)


def symbol_sectors(params: GenParams) -> dict[str, str]:
    """Sector of every symbol (ready for `risk.groups.symbol_groups`)."""
    return {sym: SECTORS[i % len(SECTORS)] for i, sym in enumerate(symbol_names(params))}


def trading_days(params: GenParams) -> list[date]:
    """The weekdays the tape covers, from `start` on."""
    day = date.fromisoformat(params.start)
    days: list[date] = []
    while len(days) < params.days:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def session_open_ms(day: date) -> int:
    """UTC epoch milliseconds of 09:30 America/New_York on `day`."""
    return int(datetime.combine(day, _SESSION_OPEN, tzinfo=_SESSION_ZONE).timestamp()) * 1000


def shock_day(params: GenParams) -> int | None:
    """Index of the sell-off day (the middle one when there are at least three), else None."""
    return params.days // 2 if params.days >= 3 else None


@dataclass(frozen=True, slots=True)
class _Day:
    """One session of bars for every symbol: rows are bars, columns symbols."""

    open: list[list[float]]
    high: list[list[float]]
    low: list[list[float]]
    close: list[list[float]]
    volume: list[list[float]]
    log_close: FloatArray  # row 0: the session's open, row k + 1: close of bar k


class _Market:
    """The sector factor model; `day()` draws one session for all symbols at once."""

    def __init__(self, params: GenParams, rng: Generator) -> None:
        n = params.symbols
        self.rng = rng
        self.bars = params.bars_per_day
        self.sector = np.arange(n) % len(SECTORS)
        self.vol = rng.uniform(0.01, 0.02, n)
        rho_market = rng.uniform(0.20, 0.35, n)
        rho_sector = rng.uniform(0.25, 0.45, n)
        self.beta = np.sqrt(rho_market) * self.vol / _MARKET_VOL
        self.gamma = np.sqrt(rho_sector) * self.vol / _SECTOR_VOL
        self.idio = np.sqrt(1.0 - rho_market - rho_sector) * self.vol
        price = np.exp(rng.uniform(math.log(30.0), math.log(500.0), n))
        self.log_close = np.log(price)
        dollar_volume = np.exp(rng.uniform(math.log(2e7), math.log(2e9), n))
        self.shares_per_bar = dollar_volume / price / self.bars
        self.shock = float(rng.uniform(*_SHOCK_RANGE))
        k = np.arange(self.bars, dtype=np.float64)
        shape = 1.0 + 1.5 * np.exp(-k / 20.0) + 0.6 * np.exp(-(self.bars - 1 - k) / 25.0)
        self.vol_profile = shape / np.sqrt(np.mean(shape**2))
        self.volume_profile = shape**2 / np.mean(shape**2)

    def day(self, shocked: bool) -> _Day:
        """Draw the next session's bars (vectorised over bars and symbols)."""
        n, rng = self.bars, self.rng
        # Row 0 is the overnight gap, row k + 1 bar k; each row's scale is its share of daily vol.
        scale = np.concatenate(([math.sqrt(_OVERNIGHT_SHARE)], self.vol_profile / math.sqrt(n)))
        market = rng.standard_normal(n + 1)
        sectors = rng.standard_normal((n + 1, len(SECTORS)))
        idio = rng.standard_normal((n + 1, self.vol.size))
        wicks = np.abs(rng.standard_normal((2, n, self.vol.size)))
        noise = rng.standard_normal((n, self.vol.size))
        drift = np.zeros(n + 1)
        stress = np.ones(n + 1)
        if shocked:
            lo = int(_SHOCK_WINDOW[0] * n)
            hi = max(lo + 1, int(_SHOCK_WINDOW[1] * n))
            drift[1 + lo : 1 + hi] = math.log(1.0 - self.shock) / (hi - lo)
            stress[1 + lo : 1 + hi] = 2.0
        m = scale * _MARKET_VOL * market * stress + drift
        s = scale[:, None] * _SECTOR_VOL * sectors
        r = m[:, None] * self.beta + s[:, self.sector] * self.gamma + scale[:, None] * idio * self.idio
        log_close = self.log_close + np.cumsum(r, axis=0)
        self.log_close = log_close[-1]
        lo_open, lo_close = log_close[:-1], log_close[1:]
        bar_sd = self.vol_profile[:, None] / math.sqrt(n) * self.vol
        high = np.maximum(lo_open, lo_close) + _WICK * bar_sd * wicks[0]
        low = np.minimum(lo_open, lo_close) - _WICK * bar_sd * wicks[1]
        size = 0.6 + 0.4 * np.abs(r[1:]) / bar_sd
        volume = self.shares_per_bar * self.volume_profile[:, None] * size * np.exp(0.35 * noise - 0.06)
        volume *= stress[1:, None]

        def cents(x: FloatArray) -> list[list[float]]:
            rounded: list[list[float]] = np.maximum(np.round(np.exp(x), 2), 0.01).tolist()
            return rounded

        shares: list[list[float]] = np.maximum(np.round(volume), 1.0).tolist()
        return _Day(cents(lo_open), cents(high), cents(low), cents(lo_close), shares, log_close)


@dataclass(slots=True)
class _Account:
    """An account's strategy and its book from fills: cash, positions, realised P&L, fees."""

    name: str
    universe: list[int]
    strategy: str
    style: float
    bias: float
    leverage: float
    phase: int
    initial: float
    cash: float
    realised: float = 0.0
    fees: float = 0.0
    signals: int = 0
    qty: dict[int, float] = field(default_factory=dict)
    avg: dict[int, float] = field(default_factory=dict)

    def apply(self, sym: int, signed: float, price: float, fee: float) -> None:
        """Book one fill at average cost."""
        self.cash -= signed * price + fee
        self.fees += fee
        held = self.qty.get(sym, 0.0)
        avg = self.avg.get(sym, 0.0)
        new = held + signed
        if held == 0 or (held > 0) == (signed > 0):
            self.avg[sym] = (abs(held) * avg + abs(signed) * price) / abs(new)
        else:
            closing = min(abs(signed), abs(held))
            self.realised += (price - avg) * closing * (1.0 if held > 0 else -1.0)
            if (new > 0) != (held > 0):
                self.avg[sym] = price
        if abs(new) < 1e-9:
            del self.qty[sym]
            self.avg.pop(sym, None)
        else:
            self.qty[sym] = new

    def equity(self, closes: list[float]) -> float:
        """Cash plus positions marked at the latest closes."""
        return self.cash + sum(q * closes[sym] for sym, q in self.qty.items())

    def balance(self) -> float:
        """Initial equity plus realised P&L minus fees."""
        return self.initial + self.realised - self.fees


@dataclass(frozen=True, slots=True)
class _Order:
    """A decision waiting for its fill."""

    account: int
    symbol: int
    side: str
    qty: float
    decision_id: str


class _Session:
    """Runs the calendar: market, accounts and the in-loop engine, yielding tape lines."""

    def __init__(self, params: GenParams, config: Config) -> None:
        self.params = params
        self.engine = Engine(config)
        market_seq, account_seq, signal_seq, fill_seq = SeedSequence(params.seed).spawn(4)
        self.market = _Market(params, Generator(PCG64(market_seq)))
        self.signal_rng = Generator(PCG64(signal_seq))
        self.fill_rng = Generator(PCG64(fill_seq))
        self.symbols = symbol_names(params)
        self.index = {sym: i for i, sym in enumerate(self.symbols)}
        self.accounts = self._accounts(Generator(PCG64(account_seq)))
        self.account_index = {a.name: i for i, a in enumerate(self.accounts)}
        self.due: dict[int, list[_Order]] = {}
        self.bar = 0  # global bar number across days
        self.fills = 0

    def _accounts(self, rng: Generator) -> list[_Account]:
        p = self.params
        accounts = []
        for i, name in enumerate(account_names(p)):
            size = min(p.symbols, int(rng.integers(20, 61)))
            universe = sorted(rng.choice(p.symbols, size=size, replace=False).tolist())
            strategy, style = STRATEGIES[int(rng.integers(len(STRATEGIES)))]
            bias = float(rng.uniform(-0.3, 1.0))
            leverage = float(np.exp(rng.uniform(math.log(0.5), math.log(4.0))))
            phase = i % p.equity_every
            accounts.append(
                _Account(name, universe, strategy, style, bias, leverage, phase, p.initial_equity, p.initial_equity)
            )
        return accounts

    def run(self) -> Iterator[bytes]:
        """Yield every input line of the tape in event order."""
        p = self.params
        bar_ms = p.bar_seconds * 1000
        shock = shock_day(p)
        signal_p = 1.0 / p.signal_every
        for day_no, day in enumerate(trading_days(p)):
            bars = self.market.day(day_no == shock)
            first_ms = session_open_ms(day)
            for k in range(p.bars_per_day):
                ts = first_ms + k * bar_ms
                opens, highs, lows = bars.open[k], bars.high[k], bars.low[k]
                closes, volumes = bars.close[k], bars.volume[k]
                for j, sym in enumerate(self.symbols):
                    value = {
                        "symbol": sym,
                        "ts": ts,
                        "open": opens[j],
                        "high": highs[j],
                        "low": lows[j],
                        "close": closes[j],
                        "volume": volumes[j],
                    }
                    yield self._emit("bars", sym, value)
                for order in self.due.pop(self.bar, ()):
                    yield self._fill(order, ts, opens, highs, lows)
                for account in self.accounts:
                    if k == 0 or (self.bar + account.phase) % p.equity_every == 0:
                        yield self._equity(account, ts, closes)
                fire = self.signal_rng.random(len(self.accounts)) < signal_p
                for i in np.flatnonzero(fire).tolist():
                    yield self._signal(self.accounts[i], ts, k, bars, closes)
                self.bar += 1

    def _emit(self, topic: str, key: str, value: dict[str, Any]) -> bytes:
        event = INPUT_MODELS[topic].model_validate(value)
        for output in self.engine.process(topic, event):
            decision = output.value
            if (
                isinstance(decision, Decision)
                and decision.action in ("ALLOW", "CLIP")
                and decision.side is not None
                and decision.qty > 0
            ):
                order = _Order(
                    self.account_index[decision.account],
                    self.index[decision.symbol],
                    decision.side.value,
                    decision.qty,
                    decision.decision_id,
                )
                self.due.setdefault(self.bar + self.params.fill_delay_bars, []).append(order)
        return orjson.dumps({"topic": topic, "key": key, "value": value}) + b"\n"

    def _fill(self, order: _Order, ts: int, opens: list[float], highs: list[float], lows: list[float]) -> bytes:
        account = self.accounts[order.account]
        sign = 1.0 if order.side == "BUY" else -1.0
        j = order.symbol
        slip = sign * _SLIPPAGE * (0.5 + float(self.fill_rng.standard_normal()))
        price = min(max(round(opens[j] * (1.0 + slip), 2), lows[j]), highs[j])
        fee = round(min(max(_MIN_FEE, _FEE_PER_SHARE * order.qty), _MAX_FEE_RATE * order.qty * price), 2)
        self.fills += 1
        value = {
            "fill_id": f"F{self.fills:09d}",
            "account": account.name,
            "symbol": self.symbols[j],
            "side": order.side,
            "qty": order.qty,
            "price": price,
            "ts": ts,
            "fee": fee,
            "decision_id": order.decision_id,
        }
        line = self._emit("fills", account.name, value)
        account.apply(j, sign * order.qty, price, fee)
        return line

    def _equity(self, account: _Account, ts: int, closes: list[float]) -> bytes:
        value = {
            "account": account.name,
            "ts": ts,
            "equity": max(0.0, round(account.equity(closes), 2)),
            "balance": max(0.0, round(account.balance(), 2)),
            "cash": round(account.cash, 2),
        }
        return self._emit("equity", account.name, value)

    def _signal(self, account: _Account, ts: int, k: int, bars: _Day, closes: list[float]) -> bytes:
        u = self.signal_rng.random(5).tolist()
        noise = float(self.signal_rng.standard_normal())
        j = account.universe[min(int(u[0] * len(account.universe)), len(account.universe) - 1)]
        back = min(k + 1, _MOMENTUM_BARS)
        move = float(bars.log_close[k + 1, j] - bars.log_close[k + 1 - back, j])
        z = move / (float(self.market.vol[j]) * math.sqrt(back / self.params.bars_per_day))
        sign = 1.0 if account.style * z + account.bias + noise > 0 else -1.0
        weight = account.leverage * (0.08 + 0.22 * u[3] if u[2] < 0.1 else 0.004 + 0.036 * u[3])
        account.signals += 1
        value: dict[str, Any] = {
            "signal_id": f"{account.name}-{account.signals:07d}",
            "account": account.name,
            "symbol": self.symbols[j],
            "ts": ts,
            "strategy": account.strategy,
        }
        if u[1] < 0.45:
            value["target_notional"] = float(round(sign * weight * account.equity(closes)))
        elif u[1] < 0.8:
            value["target_weight"] = round(sign * weight, 4)
        else:
            value["direction"] = "FLAT" if u[4] < 0.25 else ("LONG" if sign > 0 else "SHORT")
        return self._emit("signals", account.name, value)


def generate(params: GenParams, config: Config | None = None) -> Iterator[bytes]:
    """Yield the tape's lines (JSON envelopes ending in a newline) in event order."""
    session = _Session(params, config if config is not None else load_config(None))
    yield from session.run()


def write_tape(
    params: GenParams,
    sink: IO[bytes],
    config: Config | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write a generated tape to `sink`; `progress` gets the lines written so far. Returns the count."""
    count = 0
    for line in generate(params, config):
        sink.write(line)
        count += 1
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(count)
    if progress is not None and count % PROGRESS_EVERY != 0:
        progress(count)
    return count
