"""The typed seam every level shares: items, outputs, the account view, the level base (SPEC §6).

Each level stage is `state + item -> (outputs, items for the next level)`. Level 2 (market: prices,
ATR, clusters) -> Level 1 (account) -> Level 3 (symbol) -> Level 4 (portfolio, where the decision
kernel runs). Each stage keeps only its own level's state, and a later stage learns what an earlier
one decided from the notes on the item, never by reading its state. That is what lets the Faust
shell run one agent and one table per level over an ordered, account-keyed log, and the in-process
`Engine` (`streams.core.engine`) run the very same stages one after the other.

Partition-wide items (bars, cluster maps) reach every partition; account items reach the account's
partition. A stage that serves partition `p` only knows the accounts it has seen there.

The stages themselves live in `streams.core.levels.<level>.stage`, one package per level with that
level's rules and snapshot; what they hand each other is defined here, once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from schemas.base import OutputModel
from schemas.config import Config, RiskConfig
from schemas.inputs import Bar, Control, Equity, Fill, Signal
from schemas.outputs import TradingState


@dataclass(frozen=True, slots=True)
class Output:
    """One output message: logical topic, key and value."""

    topic: str
    key: str | None
    value: OutputModel


@dataclass(slots=True)
class Item:
    """What one level hands to the next: the event and the notes the levels added."""

    kind: str
    account: str | None
    event: InputEvent | None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def bar(self) -> Bar:
        """The bar of a `bar` item."""
        return _as(Bar, self.event)

    @property
    def fill(self) -> Fill:
        """The fill of a `fill` item."""
        return _as(Fill, self.event)

    @property
    def signal(self) -> Signal:
        """The signal of a `signal` item."""
        return _as(Signal, self.event)

    @property
    def equity(self) -> Equity:
        """The equity report of an `equity` item."""
        return _as(Equity, self.event)

    @property
    def control(self) -> Control:
        """The control of a `control` item."""
        return _as(Control, self.event)

    @property
    def ts(self) -> int:
        """The event time of the item's event (items without one have none to give)."""
        if self.event is None:
            raise TypeError(f"a {self.kind} item carries no event")
        return self.event.ts


InputEvent = Bar | Fill | Signal | Equity | Control
"""What an item between levels carries (None for the notes-only items: cluster maps, account notes)."""
E = TypeVar("E", Bar, Fill, Signal, Equity, Control)


def _as(kind: type[E], event: InputEvent | None) -> E:
    if not isinstance(event, kind):
        raise TypeError(f"expected a {kind.__name__}, the item carries {type(event).__name__}")
    return event


Result = tuple[list[Output], list[Item]]

PARTITION_KEY = "@"
"""The key of a level's partition-wide state in its table (the other keys are account ids)."""


def part_key(account: str, part: str, name: str) -> str:
    """The table key of one part of an account's state kept apart from the account's own key (a
    position, a chunk of seen ids), so that changing it does not rewrite the rest: `account|part|name`.
    `|` is in no account name, symbol or id (`schemas.base`), so no other key looks like one."""
    return f"{account}|{part}|{name}"


def parse_part_key(key: str) -> tuple[str, str, str] | None:
    """(account, part, name) of a `part_key`, or None for any other key."""
    parts = key.split("|")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def account_keys(item: Item, forwarded: list[Item], partition: bool = True) -> set[str]:
    """The item's account and the accounts of the items a level forwarded for it, and the partition key
    unless the level knows its partition-wide state did not change (`partition=False`).

    A level's `@` holds state of every symbol (~500 entries at Levels 3 and 4); most items (signals,
    fills, equity) leave it as it was, and naming it only when it may have changed spares serialising
    it at every batch."""
    keys = {PARTITION_KEY} if partition else set()
    if item.account is not None:
        keys.add(item.account)
    keys.update(i.account for i in forwarded if i.account is not None)
    return keys


def item_for(topic: str, event: Any) -> Item:
    """Wrap a validated input event as the first level's item."""
    if isinstance(event, Bar):
        return Item("bar", None, event)
    if isinstance(event, Control):
        return Item("control", None if event.account == "*" else event.account, event)
    if isinstance(event, Equity | Fill | Signal):
        kind = {Equity: "equity", Fill: "fill", Signal: "signal"}[type(event)]
        return Item(kind, event.account, event)
    raise TypeError(f"unsupported event on {topic}: {type(event).__name__}")


@dataclass(frozen=True, slots=True)
class AccountView:
    """What Level 1 tells the later levels about an account."""

    trading_state: TradingState
    equity: float | None
    initialized: bool
    vol_scale: float
    day_start: int | None
    day_start_equity: float
    regime: str | None = None
    next_rebalance_at: int | None = None
    cash: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "trading_state": self.trading_state,
            "equity": self.equity,
            "initialized": self.initialized,
            "vol_scale": self.vol_scale,
            "day_start": self.day_start,
            "day_start_equity": self.day_start_equity,
            "regime": self.regime,
            "next_rebalance_at": self.next_rebalance_at,
            "cash": self.cash,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccountView:
        return cls(**{**data, "trading_state": TradingState(data["trading_state"])})


class Stage(Protocol):
    """A guard level as the chain runs it: `process` an item, say which keys of its table that touched.

    A stage keeps its state and changes it in place (`process` returns the outputs and the items for
    the next level, not a new state): the chain applies thousands of items a second, and the worker
    stores only the keys `touched` names, so copying the state per item would cost more than the rule.
    The decisions themselves are pure functions of (state, event), named in each stage's docstring.
    """

    name: str
    stats: Counter[str]

    def process(self, item: Item) -> Result:
        """Outputs and the items for the next level (the level's state changes in place, see its docstring)."""
        ...

    def touched(self, item: Item, forwarded: list[Item]) -> set[str]:
        """The keys of the level's table `process(item)` may have changed."""
        ...


class Level:
    """What every per-account level shares: the config, its counters, an account's resolved rules."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stats: Counter[str] = Counter()
        self._rules: dict[str, RiskConfig] = {}

    def rules(self, account: str) -> RiskConfig:
        # Resolved once per account: the levels ask on every bar of every watched symbol.
        rules = self._rules.get(account)
        if rules is None:
            rules = self._rules[account] = self.config.risk_for(account)
        return rules


def dump_view(view: AccountView | None) -> dict[str, Any] | None:
    """A level's copy of the account view as snapshot JSON (None when it has none yet)."""
    return view.to_json() if view is not None else None


def load_view(data: dict[str, Any] | None) -> AccountView | None:
    return AccountView.from_json(data) if data is not None else None
