"""Test doubles shipped with the package: a tape builder and an in-process sink (bytewax-style).

Users can test their own consumers with these; pytest does not collect this module.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.config import Config, config_from_dict
from schemas.outputs import Decision, Halt, RiskEvent
from streams.core.engine import Engine, Output
from streams.core.levels.account.controls import sign
from streams.tape import encode, replay


@dataclass
class TapeBuilder:
    """Build an input tape line by line; `run` replays it and returns a `TapeResult`."""

    lines: list[dict[str, Any]] = field(default_factory=list)

    def add(self, topic: str, key: str | None, value: dict[str, Any]) -> TapeBuilder:
        self.lines.append({"topic": topic, "key": key, "value": value})
        return self

    def bar(
        self, symbol: str, ts: str | int, o: float, h: float, lo: float, c: float, volume: float = 1000
    ) -> TapeBuilder:
        value = {"symbol": symbol, "ts": ts, "open": o, "high": h, "low": lo, "close": c, "volume": volume}
        return self.add("bars", symbol, value)

    def flat_bar(self, symbol: str, ts: str | int, price: float) -> TapeBuilder:
        return self.bar(symbol, ts, price, price, price, price)

    def equity(
        self, account: str, ts: str | int, equity: float, balance: float | None = None, cash: float | None = None
    ) -> TapeBuilder:
        value: dict[str, Any] = {"account": account, "ts": ts, "equity": equity}
        if balance is not None:
            value["balance"] = balance
        if cash is not None:
            value["cash"] = cash
        return self.add("equity", account, value)

    def fill(
        self,
        account: str,
        symbol: str,
        side: str,
        qty: float,
        price: float,
        ts: str | int,
        fill_id: str | None = None,
        decision_id: str | None = None,
    ) -> TapeBuilder:
        value: dict[str, Any] = {
            "fill_id": fill_id or f"f{len(self.lines)}",
            "account": account,
            "symbol": symbol,
            "side": side,
            "qty": qty,
            "price": price,
            "ts": ts,
        }
        if decision_id is not None:
            value["decision_id"] = decision_id
        return self.add("fills", account, value)

    def signal(
        self, account: str, symbol: str, ts: str | int, signal_id: str | None = None, **target: Any
    ) -> TapeBuilder:
        value: dict[str, Any] = {
            "signal_id": signal_id or f"s{len(self.lines)}",
            "account": account,
            "symbol": symbol,
            "ts": ts,
            **target,
        }
        return self.add("signals", account, value)

    def raw(self, text: str) -> TapeBuilder:
        self.lines.append({"__raw__": text})
        return self

    def to_bytes(self) -> list[bytes]:
        return [line["__raw__"].encode() if "__raw__" in line else orjson.dumps(line) for line in self.lines]

    def control(
        self,
        command: str,
        account: str,
        ts: str | int,
        nonce: str,
        expires_at: str | int,
        key: bytes | None,
        **params: Any,
    ) -> TapeBuilder:
        """A control message, signed with `key` (None: unsigned)."""
        value: dict[str, Any] = {
            "command": command,
            "account": account,
            "ts": ts,
            "issued_by": "ops",
            "nonce": nonce,
            "expires_at": expires_at,
        }
        if params:
            value["params"] = params
        if key is not None:
            value["signature"] = sign(value, key)
        return self.add("control", account, value)

    def run(self, config: Config | dict[str, Any] | None = None, control_key: bytes | None = None) -> TapeResult:
        cfg = config if isinstance(config, Config) else config_from_dict(config or {})
        engine = Engine(cfg, control_key=control_key)
        sink = io.BytesIO()
        outputs: list[Output] = []
        replay(engine, self.to_bytes(), sink, on_output=outputs.append)
        return TapeResult(outputs, sink.getvalue(), engine)


@dataclass
class TapeResult:
    """The outputs of a replay, with typed accessors."""

    outputs: list[Output]
    data: bytes
    engine: Engine

    @property
    def decisions(self) -> list[Decision]:
        return [o.value for o in self.outputs if isinstance(o.value, Decision)]

    @property
    def halts(self) -> list[Halt]:
        return [o.value for o in self.outputs if isinstance(o.value, Halt)]

    @property
    def events(self) -> list[RiskEvent]:
        return [o.value for o in self.outputs if isinstance(o.value, RiskEvent)]

    def topic(self, name: str) -> list[Output]:
        return [o for o in self.outputs if o.topic == name]

    def encoded(self) -> bytes:
        return b"".join(encode(o) for o in self.outputs)
