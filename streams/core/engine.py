"""The guard engine: input events in order in, decisions / halts / events out (SPEC §6, §7).

The engine runs the four level stages (`streams.core.levels.<level>.stage`) one after the other on each event — Level 2
market, Level 1 account, Level 3 symbol, Level 4 portfolio — through a `Chain`, the same object the
Faust worker runs for each partition of the sequenced log. It reads no clock and does no I/O;
`riskguard replay`, `verify`, `gen` and the tests all call it.

Containment (SPEC §8): an exception raised while a level handles an item never leaves the chain. The
item is reported as a `LevelFailure` (the shell dead-letters it with its origin), a `level_error`
RiskEvent is published and counted, and the account concerned fails closed: HALTED with reason
`internal_error`, flattened, lifted by the next reset or a signed RESUME. A market-wide item that
fails is reported and counted; every other account goes on.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.base import InputModel
from schemas.config import Config
from schemas.outputs import RiskEvent
from streams.core.ids import stable_id
from streams.core.items import PARTITION_KEY, Item, Output, Stage, item_for
from streams.core.levels.account import rules as l1
from streams.core.levels.account.controls import signature_check
from streams.core.levels.account.stage import AccountStage
from streams.core.levels.market.stage import MarketStage
from streams.core.levels.portfolio.stage import PortfolioStage
from streams.core.levels.symbol.stage import SymbolStage
from streams.core.positions import Position

__all__ = ["CHAIN_LEVELS", "Chain", "Engine", "LevelFailure", "Output", "partition_chain"]

LEVELS = ("market", "account", "symbol", "portfolio")
CHAIN_LEVELS = LEVELS[1:]
"""The levels a partition of the sequenced log runs (Level 2 travels with the bars, as notes)."""


@dataclass(frozen=True, slots=True)
class LevelFailure:
    """An item a level raised on: dead-lettered by the shell with the item's origin."""

    level: str
    item: Item
    error: str


@dataclass(slots=True)
class ChainResult:
    """What running items through the chain produced; `touched` (when asked for) the keys per level."""

    outputs: list[Output] = field(default_factory=list)
    failures: list[LevelFailure] = field(default_factory=list)
    touched: dict[str, set[str]] | None = None
    forwarded: list[Item] = field(default_factory=list)  # what the last level handed on (the market agent's bars)


def _ts(item: Item) -> int | None:
    ts = getattr(item.event, "ts", None)
    return ts if isinstance(ts, int) else None


class Chain:
    """The level stages in order; each item goes through every later level, failures contained."""

    def __init__(self, stages: Sequence[Stage], names: Sequence[str] = LEVELS) -> None:
        self.stages = tuple(stages)
        self.names = tuple(names)
        self.account: AccountStage | None = next((s for s in self.stages if isinstance(s, AccountStage)), None)
        self.stats: Counter[str] = Counter()

    def run(self, items: list[Item], first: int = 0, touched: dict[str, set[str]] | None = None) -> ChainResult:
        """Run `items` from level `first` on: every output in order and the contained failures.

        With `touched`, each level's `touched(item, forwarded)` keys are added to `touched[level]`: what
        the worker stores in that level's table.
        """
        result = ChainResult(touched=touched)
        self._run(items, first, result, contain=True)
        return result

    def _run(self, items: list[Item], first: int, result: ChainResult, contain: bool) -> None:
        outputs = result.outputs
        touched = result.touched
        for index in range(first, len(self.stages)):
            if not items:
                return  # a level that forwards nothing leaves nothing for the later ones
            stage = self.stages[index]
            process = stage.process
            if touched is None and len(items) == 1:
                # One item and no keys to collect (replay: nearly every event): the loop below, unrolled.
                item = items[0]
                try:
                    out, items = process(item)
                except Exception as exc:
                    self._failed(index, item, exc, result, contain)
                    items = []
                    continue
                if out:
                    outputs += out
                continue
            keys = touched.setdefault(self.names[index], set()) if touched is not None else None
            forwarded: list[Item] = []
            for item in items:
                try:
                    out, more = process(item)
                except Exception as exc:
                    if keys is not None:  # whatever the level changed before it raised is stored
                        keys.update((PARTITION_KEY,) if item.account is None else (PARTITION_KEY, item.account))
                        with contextlib.suppress(Exception):  # and the part keys it had queued (symbols, ids)
                            keys |= stage.touched(item, [])
                    self._failed(index, item, exc, result, contain)
                    continue
                if out:
                    outputs += out
                forwarded += more
                if keys is not None:
                    keys |= stage.touched(item, more)
            items = forwarded
        if contain:
            result.forwarded += items

    def _failed(self, index: int, item: Item, exc: Exception, result: ChainResult, contain: bool) -> None:
        level = self.names[index]
        error = f"{level}: {type(exc).__name__}: {exc}"[:2000]
        result.failures.append(LevelFailure(level, item, error))
        self.stats["level_errors"] += 1
        ts = _ts(item)
        account = item.account
        if ts is None:
            ts = self.account.clock if self.account is not None else 0
        result.outputs.append(
            Output(
                "events",
                account,
                RiskEvent(
                    event_id=stable_id("evt", "level_error", level, account, item.kind, ts, error),
                    kind="level_error",
                    account=account,
                    ts=ts,
                    details={"level": level, "kind": item.kind, "error": error},
                ),
            )
        )
        if account is None or self.account is None or not contain:
            return  # market-wide: dead-lettered and counted, every account goes on
        at = self.stages.index(self.account)
        try:
            out, more = self.account.fail_closed(account, ts)
        except Exception as again:
            result.failures.append(LevelFailure("account", item, f"account: fail_closed: {again}"[:2000]))
            return
        result.outputs += out
        if result.touched is not None:
            result.touched.setdefault(self.names[at], set()).update(self.account.touched(more[0], more) if more else ())
        self._run(more, at + 1, result, contain=False)  # a failure while flattening is not halted again


def partition_chain(config: Config) -> Chain:
    """Fresh Levels 1, 3 and 4 for one partition of the sequenced log: the worker's level chain, the audit's."""
    return Chain((AccountStage(config), SymbolStage(config), PortfolioStage(config)), CHAIN_LEVELS)


class Engine:
    """Deterministic, single-threaded guard engine over an ordered event sequence."""

    def __init__(self, config: Config, control_key: bytes | None = None) -> None:
        self.config = config
        self.control_check = signature_check(control_key, config.control.require_signature)
        self.market = MarketStage(config)
        self.account = AccountStage(config)
        self.symbol = SymbolStage(config)
        self.portfolio = PortfolioStage(config)
        self.stages: tuple[Stage, ...] = (self.market, self.account, self.symbol, self.portfolio)
        self.chain = Chain(self.stages)
        self.failures: list[LevelFailure] = []
        self._stats: Counter[str] = Counter()

    def process(self, topic: str, event: InputModel) -> list[Output]:
        """Apply one validated input event and return every output it causes, in order."""
        return self._run([item_for(topic, event)], 0)

    def finish(self) -> list[Output]:
        """End of input: complete the pending bar timestamp of the cluster map."""
        try:
            outputs, items = self.market.finish()
        except Exception as exc:
            self.failures.append(LevelFailure("market", Item("finish", None, None), f"market: {exc}"))
            self.chain.stats["level_errors"] += 1
            return []
        return outputs + self._run(items, 1)

    def _run(self, items: list[Item], first: int) -> list[Output]:
        result = self.chain.run(items, first)
        self.failures += result.failures
        return result.outputs

    def take_failures(self) -> list[LevelFailure]:
        """The failures since the last call (the shell dead-letters them)."""
        failures, self.failures = self.failures, []
        return failures

    @property
    def stats(self) -> Counter[str]:
        """Counters of every level plus the shell's own (dead letters) and the chain's (level errors)."""
        total = Counter(self._stats)
        total.update(self.chain.stats)
        for stage in self.stages:
            total.update(stage.stats)
        return total

    def count(self, key: str) -> None:
        """Count something the shell saw (e.g. a dead letter) beside the levels' counters."""
        self._stats[key] += 1

    def account_state(self, account: str) -> l1.AccountState:
        """Level-1 state of an account."""
        return self.account.accounts[account]

    def position(self, account: str, symbol: str) -> Position:
        """Level-4 projected position of an account in a symbol."""
        return self.portfolio.books[account].positions[symbol]

    def last_close(self, symbol: str) -> float:
        """Level-2 last close of a symbol."""
        return self.market.state.symbols[symbol].close
