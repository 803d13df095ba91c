"""The execution-service client (SPEC §11) against the real broker and a real worker.

A decision comes back by id for signals of accounts on different partitions (async and sync calls);
with no worker answering, `check()` returns its local fail-closed DENY at the timeout; the client
refuses to start on a deployment whose topics are missing; SCRAM credentials from the environment
are used (and required) on a SASL broker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError

from schemas.config import load_config
from schemas.inputs import Fill, Signal
from schemas.outputs import Action, Decision, Halt
from streams.client import (
    TIMEOUT_REASON,
    GuardClient,
    GuardTopicsMissing,
    SyncGuardClient,
    decision_partition,
    expected_decision_id,
    is_local,
)
from streams.kafka_io import ensure_topics, publish
from streams.security import PASSWORD_ENV, KafkaSecurity
from streams.testing import TapeBuilder
from streams.topology import Topics
from tests.integration.conftest import Deployment, stop
from tests.integration.test_security import SaslBroker, sasl_broker  # noqa: F401 - the module's SASL broker

pytestmark = pytest.mark.integration

TS = "2024-01-15T14:00:00Z"
ACCOUNTS = ("a1", "a2", "a3", "a4", "a5", "a6")


def _equity_lines(accounts: tuple[str, ...]) -> list[bytes]:
    return [
        orjson.dumps({"topic": "equity", "key": a, "value": {"account": a, "ts": TS, "equity": 100_000.0}})
        for a in accounts
    ]


def _signal(account: str, n: int, target: float = 1_000.0) -> Signal:
    return Signal(
        signal_id=f"sig-{account}-{n}",
        account=account,
        symbol="X",
        ts=f"2024-01-15T14:0{n}:00Z",
        price=10.0,
        target_notional=target,
    )


def _prefix(deployment: Deployment) -> str:
    return load_config(deployment.config).kafka.topic_prefix


def test_check_when_worker_running_then_each_signal_gets_its_own_decision_by_id(deployment: Deployment) -> None:
    prefix = _prefix(deployment)
    assert {decision_partition(a, 4) for a in ACCOUNTS} == {0, 1, 2, 3}  # every partition; a2 and a3 share one
    worker = deployment.start_worker("w1", store="memory://")
    try:
        asyncio.run(publish(_equity_lines(ACCOUNTS), Topics(prefix), deployment.bootstrap, ordered=True, timeout=60))

        async def ask() -> tuple[list[Decision], Decision, Decision]:
            async with GuardClient(deployment.bootstrap, config=deployment.config) as client:
                signals = [_signal(a, 1) for a in ACCOUNTS]
                decisions = list(await asyncio.gather(*(client.check(s, timeout=30) for s in signals)))
                first = decisions[0]
                fill = Fill(
                    fill_id=f"f-{first.decision_id}",
                    account="a1",
                    symbol="X",
                    side="BUY",
                    qty=first.qty,
                    price=first.price,
                    ts="2024-01-15T14:01:30Z",
                    decision_id=first.decision_id,
                )
                await client.send_fill(fill)
                again = await client.evaluate_trading_decision("a1", "X", 10.0, first.qty, 1_000.0, timeout=30)
                smaller = await client.check(_signal("a2", 2, target=600.0), timeout=30)
                return decisions, again, smaller

        decisions, again, smaller = asyncio.run(ask())
        with SyncGuardClient(deployment.bootstrap, config=deployment.config) as sync_client:
            from_script = sync_client.check(_signal("a3", 2, target=2_000.0), timeout=30)
    finally:
        stop(worker)

    assert [d.decision_id for d in decisions] == [expected_decision_id(_signal(a, 1)) for a in ACCOUNTS]
    assert [(d.account, d.source_id) for d in decisions] == [(a, f"sig-{a}-1") for a in ACCOUNTS]
    assert all(not is_local(d) for d in [*decisions, again, smaller, from_script])
    assert {(d.action, d.side, d.qty, d.price) for d in decisions} == {(Action.ALLOW, "BUY", 95.0, 10.0)}
    assert (again.origin, again.account, again.symbol, again.action) == ("signal", "a1", "X", Action.NOOP)
    assert (smaller.action, smaller.side, smaller.qty) == (Action.ALLOW, "SELL", 32.0)  # 95 pending -> 63
    assert from_script.decision_id == expected_decision_id(_signal("a3", 2))
    assert (from_script.action, from_script.side, from_script.qty) == (Action.ALLOW, "BUY", 95.0)


def test_check_when_no_worker_answers_then_local_deny_guard_timeout_at_the_timeout(deployment: Deployment) -> None:
    prefix = _prefix(deployment)
    asyncio.run(ensure_topics(Topics(prefix), deployment.bootstrap, 4))  # a deployment whose worker is not running

    async def ask() -> tuple[Decision, float]:
        async with GuardClient(deployment.bootstrap, config=deployment.config) as client:
            began = time.monotonic()
            answer = await client.check(_signal("a1", 1), timeout=1.5)
            return answer, time.monotonic() - began

    answer, waited = asyncio.run(ask())

    assert is_local(answer)
    assert (answer.action, answer.reason, answer.qty) == (Action.DENY, TIMEOUT_REASON, 0.0)
    assert answer.source_id == "sig-a1-1" and answer.decision_id != expected_decision_id(_signal("a1", 1))
    assert 1.4 <= waited < 5.0


def test_check_when_worker_stopped_after_deciding_then_the_next_signal_fails_closed(deployment: Deployment) -> None:
    prefix = _prefix(deployment)
    worker = deployment.start_worker("w1", store="memory://")
    asyncio.run(publish(_equity_lines(("a1",)), Topics(prefix), deployment.bootstrap, ordered=True, timeout=60))

    async def ask() -> tuple[Decision, Decision]:
        async with GuardClient(deployment.bootstrap, config=deployment.config) as client:
            before = await client.check(_signal("a1", 1), timeout=30)
            stop(worker)
            after = await client.check(_signal("a1", 2, target=3_000.0), timeout=2.0)
            return before, after

    try:
        before, after = asyncio.run(ask())
    finally:
        stop(worker)

    assert not is_local(before) and before.action is Action.ALLOW
    assert is_local(after) and (after.action, after.reason) == (Action.DENY, TIMEOUT_REASON)


def test_start_when_the_deployments_topics_do_not_exist_then_refuses_to_start(kafka: str) -> None:
    prefix = f"absent{uuid.uuid4().hex[:8]}."

    async def start() -> None:
        async with GuardClient(kafka, prefix, 4):
            pass

    with pytest.raises(GuardTopicsMissing, match="do not exist"):
        asyncio.run(start())


def test_client_when_scram_credentials_in_env_then_decides_through_sasl_and_refused_without_them(
    sasl_broker: SaslBroker,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in sasl_broker.env.items():
        monkeypatch.setenv(name, value)
    tag = uuid.uuid4().hex[:8]
    config = tmp_path / "riskguard.yaml"
    config.write_text(f"kafka: {{topic_prefix: 's{tag}.', partitions: 2}}\n", encoding="utf-8")
    deployment = Deployment(sasl_broker.broker.bootstrap, config, f"rg-cli-{tag}", tmp_path)
    security = KafkaSecurity.from_env()
    worker = deployment.start_worker("w1", store="memory://")
    try:
        topics = Topics(f"s{tag}.")
        asyncio.run(publish(_equity_lines(("a1",)), topics, deployment.bootstrap, ordered=True, security=security))

        async def ask() -> Decision:
            async with GuardClient(deployment.bootstrap, config=config) as client:  # security from the env
                assert client.settings.security.sasl
                return await client.check(_signal("a1", 1), timeout=30)

        decision = asyncio.run(ask())
    finally:
        stop(worker)

    async def connect(security: KafkaSecurity) -> None:
        client = GuardClient(deployment.bootstrap, config=config, security=security)
        await asyncio.wait_for(client.start(), 60)

    with pytest.raises(KafkaConnectionError):
        asyncio.run(connect(KafkaSecurity()))  # no credentials: refused in the SASL handshake
    with pytest.raises(KafkaConnectionError):
        asyncio.run(connect(sasl_broker.security(**{PASSWORD_ENV: "not-" + sasl_broker.password})))
    assert not is_local(decision)
    assert decision.decision_id == expected_decision_id(_signal("a1", 1))
    assert (decision.action, decision.qty) == (Action.ALLOW, 95.0)


def test_stream_when_accounts_given_then_their_decisions_and_halts_and_no_others(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "stream-test-control-key"
    monkeypatch.setenv("RISKGUARD_CONTROL_KEY", key)
    topics = Topics(_prefix(deployment))
    wanted = {expected_decision_id(_signal(a, 1)) for a in ("a1", "a2")}
    worker = deployment.start_worker("w1", store="memory://")
    try:
        asyncio.run(publish(_equity_lines(ACCOUNTS), topics, deployment.bootstrap, ordered=True, timeout=60))
        halt = TapeBuilder().control("HALT", "a2", "2024-01-15T14:05:00Z", "n-1", "2024-01-15T15:00:00Z", key.encode())

        async def follow() -> list[Decision | Halt]:
            async with GuardClient(deployment.bootstrap, config=deployment.config) as client:
                await asyncio.gather(*(client.check(_signal(a, 1), timeout=30) for a in ACCOUNTS))
                await publish(halt.to_bytes(), topics, deployment.bootstrap, ordered=True, timeout=60)
                seen: list[Decision | Halt] = []
                async with asyncio.timeout(30):
                    async for output in client.stream(["a1", "a2"], from_beginning=True):
                        seen.append(output)
                        ids = {o.decision_id for o in seen if isinstance(o, Decision)}
                        if any(isinstance(o, Halt) for o in seen) and wanted <= ids:
                            break  # (the partitions and the two topics interleave in any order)
                return seen

        seen = asyncio.run(follow())
    finally:
        stop(worker)

    decisions = [o for o in seen if isinstance(o, Decision)]  # a3 shares a2's partition: its decision is skipped
    halts = [o for o in seen if isinstance(o, Halt)]
    assert {d.account for d in decisions} == {"a1", "a2"}
    assert wanted <= {d.decision_id for d in decisions}
    # Besides the two signals' decisions only the halt's flatten of a2's pending buy may have come.
    assert [(d.account, d.origin.value) for d in decisions if d.decision_id not in wanted] in ([], [("a2", "flatten")])
    assert [(h.account, h.state.value, h.reason) for h in halts] == [("a2", "HALTED", "operator_halt")]
