"""Positions from fills, pending decisions and the closed-trade ledger (SPEC §6, §6.5).

Projected position = filled quantity + quantity of ALLOW/CLIP decisions not yet filled. A fill
carrying `decision_id` settles that decision; pending quantity expires `pending_ttl` after the
decision in event time. Round trips (flat -> open -> flat) feed the Kelly ledger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Pending:
    qty: float
    expires_at: int
    opening_buy: float = 0.0  # of a BUY: the quantity that opens risk (buying power), at `price`
    price: float = 0.0


@dataclass(slots=True)
class Position:
    """One symbol's book for one account."""

    qty: float = 0.0
    avg_entry: float = 0.0
    peak: float = 0.0
    trough: float = 0.0
    trip_pnl: float = 0.0
    last_price: float = 0.0
    pending: dict[str, Pending] = field(default_factory=dict)
    # The sum of `pending` and its earliest expiry, valid until an entry changes (`touch_pending`) or
    # expires: a decision reads every held position's pending quantity, and the entries change far less
    # often than they are read. The sum is the same expression over the same entries, so the same bits.
    pending_sum: float | None = field(default=None, compare=False, repr=False)
    pending_until: int = field(default=0, compare=False, repr=False)

    def touch_pending(self) -> None:
        """Forget the cached sum: an entry of `pending` was added, changed or removed."""
        self.pending_sum = None

    def pending_qty(self, ts: int) -> float:
        """Unexpired pending quantity at event time `ts` (expired entries are dropped)."""
        if not self.pending:
            return 0.0
        if self.pending_sum is not None and ts < self.pending_until:
            return self.pending_sum
        expired = [key for key, p in self.pending.items() if p.expires_at <= ts]
        for key in expired:
            del self.pending[key]
        total = sum(p.qty for p in self.pending.values())
        self.pending_sum = total
        self.pending_until = min((p.expires_at for p in self.pending.values()), default=0)
        return total

    def projected(self, ts: int) -> float:
        return self.qty + (self.pending_qty(ts) if self.pending else 0.0)

    def pending_buys(self, ts: int) -> float:
        """Notional of the risk-increasing part of unexpired pending BUY decisions (what buying power holds).

        A partly filled decision holds what is left of its opening part: the fills of a covering buy close
        the short first, so its remaining quantity is opening first.
        """
        self.pending_qty(ts)  # drops the expired ones
        return math.fsum(min(p.opening_buy, p.qty) * p.price for p in self.pending.values() if p.opening_buy > 0)


@dataclass(slots=True)
class Ledger:
    """Closed round trips of an account: counts and sums, enough for Kelly."""

    wins: int = 0
    losses: int = 0
    win_sum: float = 0.0
    loss_sum: float = 0.0

    @property
    def trades(self) -> int:
        return self.wins + self.losses

    def record(self, pnl: float) -> None:
        if pnl > 0:
            self.wins += 1
            self.win_sum += pnl
        else:
            self.losses += 1
            self.loss_sum += -pnl


def apply_fill(
    position: Position, ledger: Ledger, signed_qty: float, price: float, fee: float, decision_id: str | None
) -> None:
    """Apply one execution: settle its decision, move quantity, average entry and round-trip P&L."""
    if decision_id is not None and decision_id in position.pending:
        position.touch_pending()
        pending = position.pending[decision_id]
        remaining = pending.qty - signed_qty
        if pending.qty * remaining <= 0:
            del position.pending[decision_id]
        else:
            pending.qty = remaining
    qty = position.qty
    position.trip_pnl -= fee
    if qty == 0 or (qty > 0) == (signed_qty > 0):
        new_qty = qty + signed_qty
        position.avg_entry = (abs(qty) * position.avg_entry + abs(signed_qty) * price) / abs(new_qty)
        if qty == 0:
            position.peak = position.trough = price
        position.qty = new_qty
        return
    closing = min(abs(signed_qty), abs(qty))
    direction = 1.0 if qty > 0 else -1.0
    position.trip_pnl += (price - position.avg_entry) * closing * direction
    new_qty = qty + signed_qty
    if abs(new_qty) < 1e-12 or (new_qty > 0) != (qty > 0):
        ledger.record(position.trip_pnl)
        position.trip_pnl = 0.0
        if abs(new_qty) < 1e-12:
            position.qty, position.avg_entry = 0.0, 0.0
            return
        position.avg_entry = price
        position.peak = position.trough = price
    position.qty = new_qty


def add_pending(
    position: Position,
    decision_id: str,
    signed_qty: float,
    expires_at: int,
    opening_buy: float = 0.0,
    price: float = 0.0,
) -> None:
    """Record an ALLOW/CLIP decision's quantity as pending until filled or expired.

    `opening_buy` (a BUY's risk-increasing quantity) and its `price` are what buying power holds back.
    """
    if signed_qty != 0:
        position.pending[decision_id] = Pending(signed_qty, expires_at, opening_buy, price)
        position.touch_pending()


def dump_position(p: Position) -> dict[str, Any]:
    """A position as snapshot JSON (Levels 3 and 4 store theirs alike)."""
    return {
        "qty": p.qty,
        "avg_entry": p.avg_entry,
        "peak": p.peak,
        "trough": p.trough,
        "trip_pnl": p.trip_pnl,
        "last_price": p.last_price,
        "pending": {
            k: [v.qty, v.expires_at, v.opening_buy, v.price] if v.opening_buy else [v.qty, v.expires_at]
            for k, v in p.pending.items()
        },
    }


def load_position(data: dict[str, Any]) -> Position:
    pending = {k: Pending(*v) for k, v in data["pending"].items()}
    return Position(
        data["qty"], data["avg_entry"], data["peak"], data["trough"], data["trip_pnl"], data["last_price"], pending
    )
