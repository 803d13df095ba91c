"""An example execution service on `streams.client.GuardClient` (SPEC §11): ask, fill, report, mark.

For each strategy signal, in order, it waits until the market feed has reached the signal's time,
asks the guard (`check`), and executes only what the guard allows: an ALLOW or CLIP in `enforce`
mode is filled at once at the decision's price and quantity (a simulated venue), the fill goes to
the fills topic carrying its `decision_id` (so the guard counts it as filled, not pending), and the
account's equity — cash plus positions at the latest closes — goes to the equity topic. DENY, NOOP,
shadow decisions and the client's own fail-closed answer (`guard_timeout`) are not traded.

It also follows the guard's own decisions and halts for its accounts (`stream`): exits the guard
decides by itself (stop-loss, take-profit, trailing, flatten on a halt, cadence, rebalance) are
executed the same way, and every halt is shown. Equity is marked every `--mark-every` bar times too.

    python examples/execution_service.py --signals signals.jsonl --config riskguard.yaml [--equity 1000000]

`--signals` is JSON Lines of Signal values, or of tape envelopes (lines of other topics are ignored).
Connection, topic prefix, partitions and SASL/TLS come from `--config` / the environment, like the worker's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python examples/execution_service.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from schemas.inputs import Bar, Equity, Fill, Signal
from schemas.outputs import Action, Decision, Halt, Mode, Origin
from schemas.timefmt import format_ts
from streams.client import GuardClient, is_local

log = structlog.get_logger("riskguard.example.execution")

TRADED = (Action.ALLOW, Action.CLIP)


@dataclass
class Book:
    """One account's simulated holdings: cash and signed share counts."""

    cash: float
    shares: dict[str, float] = field(default_factory=dict)

    def apply(self, symbol: str, side: str, qty: float, price: float) -> None:
        signed = qty if side == "BUY" else -qty
        self.cash -= signed * price
        after = self.shares.get(symbol, 0.0) + signed
        if abs(after) < 1e-9:
            self.shares.pop(symbol, None)
        else:
            self.shares[symbol] = after

    def equity(self, closes: dict[str, float]) -> float:
        return self.cash + math.fsum(q * closes.get(s, 0.0) for s, q in self.shares.items())


@dataclass
class Tally:
    """What the service did: orders asked, fills sent, refusals, fail-closed answers, halts seen."""

    asked: int = 0
    filled: int = 0
    refused: int = 0
    unchanged: int = 0
    timeouts: int = 0
    guard_exits: int = 0
    halts: int = 0


def executable(decision: Decision) -> bool:
    """A decision to trade: ALLOW/CLIP with a quantity, enforced, published by the guard."""
    return decision.action in TRADED and decision.qty > 0 and decision.mode is Mode.ENFORCE and not is_local(decision)


def fill_for(decision: Decision) -> Fill:
    """The simulated venue's execution of a decision: all of it, at its price, at its event time."""
    assert decision.side is not None  # noqa: S101 - executable() decisions have a side
    return Fill(
        fill_id=f"fill-{decision.decision_id}",
        account=decision.account,
        symbol=decision.symbol,
        side=decision.side,
        qty=decision.qty,
        price=decision.price,
        ts=decision.ts,
        decision_id=decision.decision_id,
    )


class ExecutionService:
    """Trades the signals of some accounts through the guard and closes the loop with fills and equity."""

    def __init__(
        self,
        client: GuardClient,
        equity: dict[str, float],
        say: Callable[[str], None] = print,
        timeout: float = 5.0,
        show_halts: bool = True,
    ) -> None:
        self.client = client
        self.books = {account: Book(cash) for account, cash in equity.items()}
        self.closes: dict[str, float] = {}
        self.market_ts = -1
        self.clock = 0  # the latest event time the service has acted at
        self.say = say
        self.timeout = timeout
        self.tally = Tally()
        self.done: set[str] = set()  # decision ids executed (a decision is filled once)
        self.halted: dict[str, str] = {}
        self.show_halts = show_halts
        self._market = asyncio.Condition()
        self._trading = asyncio.Lock()  # one order at a time: fills and marks stay in event-time order

    async def open_books(self, ts: int) -> None:
        """The accounts' opening equity, before their first order."""
        await self.mark_all(ts)

    async def on_bar(self, bar: Bar) -> None:
        async with self._market:
            self.closes[bar.symbol] = bar.close
            self.market_ts = max(self.market_ts, bar.ts)
            self._market.notify_all()

    async def wait_market(self, ts: int, limit: float) -> bool:
        """Until the feed has a bar at or after `ts` (False after `limit` s: trade on the last closes)."""
        async with self._market:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limit):
                    await self._market.wait_for(lambda: self.market_ts >= ts)
            return self.market_ts >= ts

    async def mark(self, account: str, ts: int) -> None:
        book = self.books[account]
        self.clock = max(self.clock, ts)
        value = round(max(book.equity(self.closes), 0.0), 2)
        await self.client.send_equity(Equity(account=account, ts=self.clock, equity=value, cash=round(book.cash, 2)))

    async def mark_all(self, ts: int) -> None:
        async with self._trading:
            for account in self.books:
                await self.mark(account, ts)

    async def order(self, signal: Signal) -> Decision:
        """Ask the guard about one signal and execute what it allows."""
        if signal.price is None and signal.symbol in self.closes:
            signal = signal.model_copy(update={"price": self.closes[signal.symbol]})
        async with self._trading:
            self.tally.asked += 1
            decision = await self.client.check(signal, timeout=self.timeout)
            if is_local(decision):
                self.tally.timeouts += 1
                self.say(f"NO ANSWER {signal.account} {signal.symbol}: {decision.reason}, not traded")
            elif executable(decision):
                await self._execute(decision)
            elif decision.action is Action.DENY:
                self.tally.refused += 1
                self.say(f"REFUSED {signal.account} {signal.symbol}: {decision.layer.value}/{decision.reason}")
            else:
                self.tally.unchanged += 1
            return decision

    async def _execute(self, decision: Decision) -> None:
        if decision.decision_id in self.done:
            return
        self.done.add(decision.decision_id)
        fill = fill_for(decision)
        await self.client.send_fill(fill)
        self.books[decision.account].apply(fill.symbol, fill.side.value, fill.qty, fill.price)
        self.closes.setdefault(fill.symbol, fill.price)
        self.tally.filled += 1
        origin = "" if decision.origin is Origin.SIGNAL else f" ({decision.origin.value})"
        self.say(
            f"FILL {format_ts(decision.ts)} {decision.account} {fill.side.value} {fill.qty:g} {fill.symbol} "
            f"@ {fill.price:.2f}{origin} {decision.decision_id}"
        )
        await self.mark(decision.account, decision.ts)

    async def follow_guard(self) -> None:
        """Execute the guard's own decisions (exits, flatten, cadence, rebalance); note halts. Runs until cancelled."""
        async for output in self.client.stream(self.books):
            if isinstance(output, Halt):
                self.tally.halts += 1
                self.halted[output.account] = output.state.value
                if self.show_halts:
                    change = f"{output.previous_state.value} -> {output.state.value}"
                    self.say(f"HALT {output.account} {change} ({output.reason})")
            elif output.origin is not Origin.SIGNAL and executable(output):
                async with self._trading:
                    self.tally.guard_exits += 1
                    await self._execute(output)

    async def run(self, signals: Sequence[Signal], mark_every: int = 5, market_wait: float = 10.0) -> Tally:
        """Trade `signals` in order while following the guard; marks equity every `mark_every` bar times."""
        follower = asyncio.create_task(self.follow_guard())
        marker = asyncio.create_task(self._mark_on_bars(mark_every))
        try:
            if signals:
                await self.open_books(signals[0].ts)
            for signal in signals:
                await self.wait_market(signal.ts, market_wait)
                await self.order(signal)
            await asyncio.sleep(1.0)  # the guard's reaction to the last fills (exits) still gets executed
        finally:
            for task in (marker, follower):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return self.tally

    async def _mark_on_bars(self, every: int) -> None:
        seen = self.market_ts
        count = 0
        while True:
            seen = await self._bar_time_after(seen)
            count += 1
            if count % every == 0:
                await self.mark_all(seen)

    async def _bar_time_after(self, after: int) -> int:
        async with self._market:
            await self._market.wait_for(lambda: self.market_ts > after)
            return self.market_ts


async def feed_bars(service: ExecutionService, stop: asyncio.Event) -> None:
    """The market feed: the deployment's bars topic from the beginning, into `service.on_bar`."""
    client = service.client
    consumer = AIOKafkaConsumer(
        bootstrap_servers=client.settings.bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        **client.settings.security.aiokafka_kwargs(),
    )
    await consumer.start()
    try:
        topic = client.topics.name("bars")
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for records in batches.values():
                for record in records:
                    with contextlib.suppress(ValueError):
                        await service.on_bar(Bar.model_validate(orjson.loads(record.value or b"null")))
    finally:
        await consumer.stop()


def read_signals(lines: Iterable[bytes]) -> list[Signal]:
    """Signals from JSON Lines of Signal values or of tape envelopes (other topics skipped)."""
    found: list[Signal] = []
    for raw in lines:
        if not raw.strip():
            continue
        data: Any = orjson.loads(raw)
        if isinstance(data, dict) and "topic" in data:
            if data["topic"] != "signals":
                continue
            data = data["value"]
        found.append(Signal.model_validate(data))
    return found


async def serve(
    signals: Sequence[Signal],
    equity: float,
    client: GuardClient,
    say: Callable[[str], None] = print,
    timeout: float = 5.0,
    mark_every: int = 5,
    show_halts: bool = True,
) -> tuple[Tally, ExecutionService]:
    """Run the service for `signals` with its market feed; returns what it did."""
    accounts = {s.account: equity for s in signals}
    service = ExecutionService(client, accounts, say, timeout, show_halts)
    stop = asyncio.Event()
    feed = asyncio.create_task(feed_bars(service, stop))
    try:
        tally = await service.run(signals, mark_every)
    finally:
        stop.set()
        await feed
    return tally, service


def print_now(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signals", type=Path, required=True, help="JSON Lines of signals (or a tape).")
    parser.add_argument("--config", type=Path, default=None, help="The deployment's YAML (default RISKGUARD_CONFIG).")
    parser.add_argument("--bootstrap", default=None, help="Default: the config, then KAFKA_BOOTSTRAP_SERVERS.")
    parser.add_argument("--equity", type=float, default=1_000_000.0, help="Opening equity (all cash) per account.")
    parser.add_argument("--timeout", type=float, default=5.0, help="Seconds to wait for each decision.")
    parser.add_argument("--mark-every", type=int, default=5, help="Mark equity every N bar times.")
    parser.add_argument("--quiet-halts", action="store_true", help="Do not print halts (someone else shows them).")
    args = parser.parse_args(argv)
    signals = read_signals(args.signals.read_bytes().splitlines())

    async def run() -> Tally:
        async with GuardClient(args.bootstrap, config=args.config) as client:
            tally, _ = await serve(
                signals, args.equity, client, print_now, args.timeout, args.mark_every, not args.quiet_halts
            )
            return tally

    began = time.monotonic()
    tally = asyncio.run(run())
    print(
        f"execution service: {tally.asked} orders asked, {tally.filled} fills sent "
        f"({tally.guard_exits} guard exits), {tally.refused} refused, {tally.unchanged} unchanged, "
        f"{tally.timeouts} without answer, {tally.halts} halts, {time.monotonic() - began:.0f} s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
