"""Output messages of SPEC §4: Decision, Halt, RiskEvent, RebalanceRun, DeadLetter."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from schemas.base import EventTime, Finite, NonNegativeFinite, OutputModel
from schemas.inputs import Side


class Action(StrEnum):
    ALLOW = "ALLOW"
    CLIP = "CLIP"
    DENY = "DENY"
    NOOP = "NOOP"


class Layer(StrEnum):
    ACCOUNT = "account"
    CLUSTER = "cluster"
    PER_SYMBOL = "per_symbol"
    PER_TRADE = "per_trade"
    FACTOR = "factor"
    GROUP = "group"
    PORTFOLIO = "portfolio"


class Origin(StrEnum):
    SIGNAL = "signal"
    CADENCE = "cadence"
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"
    FLATTEN = "flatten"
    REBALANCE = "rebalance"


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    WARNING = "WARNING"
    REDUCING = "REDUCING"
    HALTED = "HALTED"
    SHUTDOWN = "SHUTDOWN"


class Mode(StrEnum):
    ENFORCE = "enforce"
    SHADOW = "shadow"


class ClipRecord(OutputModel):
    """One layer's reduction of a request: notional before and after."""

    layer: Layer
    reason: str
    before: Finite
    after: Finite


class Decision(OutputModel):
    """The guard's verdict on one requested trade."""

    decision_id: str
    account: str
    symbol: str
    ts: EventTime
    origin: Origin
    source_id: str
    action: Action
    side: Side | None
    qty: NonNegativeFinite
    requested_qty: NonNegativeFinite
    price: Finite
    notional: Finite
    layer: Layer
    reason: str
    clips: list[ClipRecord] = Field(default_factory=list)
    facts: dict[str, Any] = Field(default_factory=dict)
    mode: Mode = Mode.ENFORCE
    config_version: str


class HaltFacts(OutputModel):
    """The account figures behind a trading-state change."""

    equity: Finite
    day_start_equity: Finite
    day_start_balance: Finite
    peak_equity: Finite
    initial_balance: Finite
    daily_loss_pct: Finite
    intraday_drawdown_pct: Finite
    total_loss_pct: Finite


class Halt(OutputModel):
    """A change of an account's trading state."""

    halt_id: str
    account: str
    ts: EventTime
    state: TradingState
    previous_state: TradingState
    reason: str
    until: EventTime | None
    facts: HaltFacts


class RiskEvent(OutputModel):
    """A warning, cluster map, budget recommendation or security notice."""

    event_id: str
    kind: str
    account: str | None
    ts: EventTime
    details: dict[str, Any] = Field(default_factory=dict)


class RebalanceRun(OutputModel):
    """A rebalance run record (seed 004 §9)."""

    run_id: str
    account: str
    ts: EventTime
    status: str
    trigger: str
    policy: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    orders: list[dict[str, Any]] = Field(default_factory=list)
    summary: dict[str, Any] = Field(default_factory=dict)


class DeadLetterSource(OutputModel):
    """Where a rejected message came from: a Kafka position or a tape line."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    line: int | None = None


class DeadLetter(OutputModel):
    """A message that could not be used, kept whole with the reason."""

    source: DeadLetterSource
    key: str | None
    raw: str
    error: str
    ts: str


OUTPUT_MODELS: dict[str, type[OutputModel]] = {
    "decisions": Decision,
    "halts": Halt,
    "events": RiskEvent,
    "rebalance_runs": RebalanceRun,
    "deadletter": DeadLetter,
}
