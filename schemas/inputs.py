"""Input messages of SPEC §4: Bar, Fill, Signal, Equity, Control."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from schemas.base import (
    AccountId,
    Fee,
    Id,
    InputModel,
    InputTime,
    Money,
    Params,
    Price,
    Quantity,
    Signature,
    SignedMoney,
    Symbol,
    Volume,
    Weight,
    not_reserved_account,
)


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class Direction(StrEnum):
    LONG = "LONG"
    SHORT = "SHORT"
    FLAT = "FLAT"


class Command(StrEnum):
    HALT = "HALT"
    RESUME = "RESUME"
    REBALANCE = "REBALANCE"
    SET_REGIME = "SET_REGIME"


class Bar(InputModel):
    """One OHLCV bar of a symbol; the market clock of the guards."""

    symbol: Symbol
    ts: InputTime
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Volume = 0.0

    @model_validator(mode="after")
    def _ohlc_consistent(self) -> Bar:
        if not self.low <= min(self.open, self.close) <= max(self.open, self.close) <= self.high:
            raise ValueError(
                f"inconsistent OHLC: need low <= min(open, close) <= max(open, close) <= high, got "
                f"open={self.open} high={self.high} low={self.low} close={self.close}"
            )
        return self


class Fill(InputModel):
    """An execution report; repeated fill ids are ignored."""

    fill_id: Id
    account: AccountId
    symbol: Symbol
    side: Side
    qty: Quantity
    price: Price
    ts: InputTime
    fee: Fee = 0.0
    decision_id: Id | None = None

    @property
    def signed_qty(self) -> float:
        return self.qty if self.side is Side.BUY else -self.qty


class Signal(InputModel):
    """A strategy's wish for one symbol: exactly one of target_notional, target_weight, direction."""

    signal_id: Id
    account: AccountId
    symbol: Symbol
    ts: InputTime
    strategy: Id = "default"
    price: Price | None = None
    target_notional: SignedMoney | None = None
    target_weight: Weight | None = None
    direction: Direction | None = None
    atr: Price | None = None

    @model_validator(mode="after")
    def _exactly_one_target(self) -> Signal:
        given = [name for name in ("target_notional", "target_weight", "direction") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a signal needs exactly one of target_notional, target_weight, direction; got {given or 'none'}"
            )
        return self


class Equity(InputModel):
    """Account equity (incl. open P&L), optional balance (closed P&L only) and cash."""

    account: AccountId
    ts: InputTime
    equity: Money
    balance: Money | None = None
    cash: SignedMoney | None = None


class Control(InputModel):
    """A signed operator command (SPEC §8)."""

    command: Command
    account: Annotated[
        str,
        Field(min_length=1, max_length=128, pattern=r"^(\*|[A-Za-z0-9_.:@/#+=~-]+)$"),
        AfterValidator(not_reserved_account),
    ]
    ts: InputTime
    issued_by: Id
    nonce: Id
    expires_at: InputTime
    params: Params = Field(default_factory=dict)
    signature: Signature | None = None


InputTopic = Literal["bars", "fills", "signals", "equity", "control"]

INPUT_MODELS: dict[str, type[InputModel]] = {
    "bars": Bar,
    "fills": Fill,
    "signals": Signal,
    "equity": Equity,
    "control": Control,
}
