"""The example execution service (`examples/execution_service.py`) against a real worker on the real broker.

It closes the loop: every fill it sends executes a decision the guard published (same account,
symbol, side, quantity and price, carrying its `decision_id`), the guard's state shows those
decisions settled (no pending quantity, positions equal to the service's books), and an account an
operator halted gets its entries refused and is never filled.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import urllib.request
from typing import Any

import orjson
import pytest

from examples.execution_service import read_signals, serve
from schemas.config import load_config
from schemas.outputs import Action, Layer
from streams.client import GuardClient
from streams.kafka_io import publish, record
from streams.testing import TapeBuilder
from streams.topology import Topics
from tests.integration.conftest import Deployment, stop

pytestmark = pytest.mark.integration

KEY = "test-control-key-execution"
T0 = 1_705_327_200_000  # 2024-01-15T14:00:00Z
MINUTE = 60_000


def _opening(symbols: dict[str, float]) -> list[bytes]:
    """Bars at T0, T0+1m and T0+5m, both accounts' equity, then a signed HALT of account `h`."""
    tape = TapeBuilder()
    for minute in (0, 1, 5):
        for symbol, price in symbols.items():
            tape.flat_bar(symbol, T0 + minute * MINUTE, price)
    for account in ("ok", "h"):
        tape.equity(account, T0, 100_000.0)
    tape.control("HALT", "h", T0 + 30_000, "n-halt-1", T0 + 10 * MINUTE, KEY.encode())
    return tape.to_bytes()


def _signals() -> list[bytes]:
    tape = TapeBuilder()
    plan = [
        ("ok", "X", 10_000.0),
        ("h", "X", 10_000.0),
        ("ok", "Y", 6_000.0),
        ("h", "Y", 6_000.0),
        ("ok", "X", 3_000.0),
    ]
    for n, (account, symbol, target) in enumerate(plan):
        tape.signal(account, symbol, T0 + 2 * MINUTE + n * 1000, signal_id=f"x-{n}", target_notional=target)
    return tape.to_bytes()


def _state(port: int, account: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/{account}/state", timeout=5) as reply:
        data: dict[str, Any] = json.loads(reply.read())
        return data


def test_execution_service_when_run_on_the_real_broker_then_every_fill_settles_a_decision_and_halted_entries_refused(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISKGUARD_CONTROL_KEY", KEY)
    topics = Topics(load_config(deployment.config).kafka.topic_prefix)
    worker = deployment.start_worker("w1", store="memory://")
    said: list[str] = []
    try:
        asyncio.run(publish(_opening({"X": 50.0, "Y": 20.0}), topics, deployment.bootstrap, ordered=True, timeout=60))

        async def run() -> Any:
            async with GuardClient(deployment.bootstrap, config=deployment.config) as client:
                tally, service = await serve(read_signals(_signals()), 100_000.0, client, said.append, timeout=20)
                return tally, service

        tally, service = asyncio.run(run())
        port = deployment.ports["w1"]
        deadline = time.monotonic() + 30
        ok_state = _state(port, "ok")
        while any(p["pending"] for p in ok_state["positions"]) and time.monotonic() < deadline:
            time.sleep(0.5)  # the last fill may still be on its way through the sequencer
            ok_state = _state(port, "ok")
        h_state = _state(port, "h")
        sink = io.BytesIO()
        asyncio.run(record(topics, deployment.bootstrap, ["fills", "decisions"], sink, idle=3.0, limit_s=60))
    finally:
        stop(worker)
    envelopes = [orjson.loads(line) for line in sink.getvalue().splitlines()]
    fills = [e["value"] for e in envelopes if e["topic"] == "fills"]
    decisions = {e["value"]["decision_id"]: e["value"] for e in envelopes if e["topic"] == "decisions"}

    assert tally.asked == 5 and tally.timeouts == 0, said
    assert len(fills) == tally.filled >= 3, said  # ok: X, Y, then the reduction of X
    for fill in fills:
        decision = decisions[fill["decision_id"]]
        assert decision["action"] in (Action.ALLOW, Action.CLIP)
        assert [fill[k] for k in ("account", "symbol", "side", "qty", "price")] == [
            decision[k] for k in ("account", "symbol", "side", "qty", "price")
        ]
    assert {f["account"] for f in fills} == {"ok"}
    refused = [d for d in decisions.values() if d["account"] == "h" and d["origin"] == "signal"]
    assert len(refused) == 2 and {(d["action"], d["layer"]) for d in refused} == {(Action.DENY, Layer.ACCOUNT)}
    assert tally.refused == 2 and service.books["h"].shares == {}
    assert h_state["trading_state"] == "HALTED"
    positions = {p["symbol"]: p for p in ok_state["positions"]}
    assert {s: p["qty"] for s, p in positions.items()} == service.books["ok"].shares
    assert all(p["pending"] == 0 for p in positions.values())
    assert any(line.startswith("FILL ") and " ok BUY " in line for line in said)
