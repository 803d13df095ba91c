"""The guard engine: input events in order in, decisions / halts / events out (SPEC §6, §7).

The engine runs the four level stages of `stages.py` one after the other on each event — Level 2
market, Level 1 account, Level 3 symbol, Level 4 portfolio — exactly as the Faust agents do over
Kafka, one agent per level. It reads no clock and does no I/O; `riskguard replay`, `verify`, `gen`
and the tests all call it.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

from schemas.base import InputModel
from schemas.config import Config
from streams.core import account as l1
from streams.core.controls import check_signature
from streams.core.positions import Position
from streams.core.stages import (
    AccountStage,
    Item,
    MarketStage,
    Output,
    PortfolioStage,
    SymbolStage,
    item_for,
)

__all__ = ["Engine", "Output"]


class Engine:
    """Deterministic, single-threaded guard engine over an ordered event sequence."""

    def __init__(self, config: Config, control_key: bytes | None = None) -> None:
        self.config = config
        self.control_check = partial(check_signature, key=control_key, required=config.control.require_signature)
        self.market = MarketStage(config)
        self.account = AccountStage(config)
        self.symbol = SymbolStage(config)
        self.portfolio = PortfolioStage(config)
        self.stages: tuple[Any, ...] = (self.market, self.account, self.symbol, self.portfolio)
        self._stats: Counter[str] = Counter()

    def process(self, topic: str, event: InputModel) -> list[Output]:
        """Apply one validated input event and return every output it causes, in order."""
        return self._run([item_for(topic, event)], 0)

    def finish(self) -> list[Output]:
        """End of input: complete the pending bar timestamp of the cluster map."""
        outputs, items = self.market.finish()
        return outputs + self._run(items, 1)

    def _run(self, items: list[Item], first: int) -> list[Output]:
        outputs: list[Output] = []
        for stage in self.stages[first:]:
            if not items:
                break  # a level that forwards nothing leaves nothing for the later ones
            process = stage.process
            forwarded: list[Item] = []
            for item in items:
                out, more = process(item)
                if out:
                    outputs += out
                forwarded += more
            items = forwarded
        return outputs

    @property
    def stats(self) -> Counter[str]:
        """Counters of every level plus the shell's own (dead letters)."""
        total = Counter(self._stats)
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
