"""The Nautilus strategy's live guard (`streams.nautilus.LiveGuard`, SPEC §11) against a real worker on the
real broker: it decides as the in-process guard does, publishes fills and equity, and hands the strategy
the guard's own outputs (a signed HALT and its flatten) at its next event."""

from __future__ import annotations

import time

import pytest

from schemas.outputs import Decision, Halt
from streams.client import SyncGuardClient
from streams.kafka_io import publish
from streams.nautilus import InProcessGuard, LiveGuard
from streams.testing import TapeBuilder
from streams.topology import Topics
from tests.integration.conftest import Deployment, stop

pytestmark = pytest.mark.integration

KEY = "nautilus-live-key"
TS = "2024-01-15T14:00:00Z"


def test_live_guard_when_a_worker_decides_then_same_answers_as_in_process_and_the_halt_reaches_the_strategy(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from schemas.config import load_config

    monkeypatch.setenv("RISKGUARD_CONTROL_KEY", KEY)
    config = load_config(deployment.config)
    topics = Topics(config.kafka.topic_prefix)
    bar = {"symbol": "AAA", "ts": TS, "open": 50.0, "high": 50.0, "low": 50.0, "close": 50.0}
    equity = {"account": "acct", "ts": TS, "equity": 100_000.0, "cash": 100_000.0}
    signal = {"signal_id": "s1", "account": "acct", "symbol": "AAA", "ts": "2024-01-15T14:01:00Z", "target_weight": 0.1}
    local = InProcessGuard(deployment.config)
    local.send("bars", "AAA", bar)
    local.send("equity", "acct", equity)
    (expected,) = local.send("signals", "acct", signal)
    worker = deployment.start_worker("w1", store="memory://")
    try:
        with SyncGuardClient(deployment.bootstrap, config=deployment.config) as client:
            guard = LiveGuard(client, "acct", timeout=30)
            guard.follow()
            # The market feed and the account's first equity, in order (the sequencer is not asked to order a
            # live client's sends against other producers' messages).
            start = TapeBuilder().add("bars", "AAA", bar).add("equity", "acct", equity)
            publish_sync(start.to_bytes(), topics, deployment.bootstrap)
            answers = guard.send("signals", "acct", signal)
            decision = answers[-1]
            assert isinstance(decision, Decision)
            fill = {"fill_id": "f1", "account": "acct", "symbol": "AAA", "side": "BUY", "qty": decision.qty}
            guard.send(
                "fills",
                "acct",
                {**fill, "price": 50.0, "ts": "2024-01-15T14:02:00Z", "decision_id": decision.decision_id},
            )
            halt = TapeBuilder().control(
                "HALT", "acct", "2024-01-15T14:03:00Z", "n-halt", "2024-01-15T15:00:00Z", KEY.encode()
            )
            publish_sync(halt.to_bytes(), topics, deployment.bootstrap)
            arrived: list[Decision | Halt] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(isinstance(o, Halt) for o in arrived):
                arrived += guard.send("equity", "acct", {**equity, "ts": "2024-01-15T14:04:00Z"})
                time.sleep(0.2)
            guard.close()
    finally:
        stop(worker)

    assert isinstance(expected, Decision)
    assert (decision.decision_id, decision.action, decision.qty) == (
        expected.decision_id,
        expected.action,
        expected.qty,
    )
    assert decision.qty == 190  # 10 % of 100,000 = 10,000: to the band's lower edge 9,500 at 50
    halts = [o for o in arrived if isinstance(o, Halt)]
    flattens = [o for o in arrived if isinstance(o, Decision) and o.origin.value == "flatten"]
    assert [(h.state.value, h.reason) for h in halts] == [("HALTED", "operator_halt")]
    # The flatten sells what was filled: the fill reached the worker through the live guard.
    assert [(d.side and d.side.value, d.qty) for d in flattens] == [("SELL", 190)]


def publish_sync(lines: list[bytes], topics: Topics, bootstrap: str) -> None:
    import asyncio

    asyncio.run(publish(lines, topics, bootstrap, ordered=True, timeout=60))
