"""The pure parts of the execution-service client (SPEC §11): fail-closed answers, partition choice, id matching."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from schemas.config import ConfigError
from schemas.inputs import Signal
from schemas.outputs import Action, Decision, Layer
from streams.client import (
    TIMEOUT_REASON,
    ClientSettings,
    GuardClient,
    LocalDecision,
    SyncGuardClient,
    decision_partition,
    expected_decision_id,
    fail_closed,
    is_local,
    matching_decision,
    signed_qty,
    target_signal,
)
from streams.security import PASSWORD_ENV, USERNAME_ENV
from streams.testing import TapeBuilder

SIGNAL = Signal(signal_id="s1", account="acct-1", symbol="NVDA", ts="2024-01-15T10:30:00Z", target_notional=25_000)


def _guard_decision(tape: TapeBuilder) -> Decision:
    decisions = tape.run().decisions
    assert len(decisions) == 1
    return decisions[0]


def test_fail_closed_when_guard_silent_then_deny_guard_timeout_marked_local() -> None:
    answer = fail_closed(SIGNAL.model_copy(update={"price": 150.0}), timeout_s=0.5)

    assert (answer.action, answer.reason, answer.layer, answer.qty, answer.side) == (
        Action.DENY,
        TIMEOUT_REASON,
        Layer.ACCOUNT,
        0.0,
        None,
    )
    assert is_local(answer) and answer.local is True and answer.facts["local"] is True
    assert (answer.source_id, answer.account, answer.symbol, answer.ts, answer.price) == (
        "s1",
        "acct-1",
        "NVDA",
        SIGNAL.ts,
        150.0,
    )
    assert answer.config_version == "local"


def test_fail_closed_when_compared_with_the_guards_decision_then_different_id_and_not_a_valid_decision() -> None:
    answer = fail_closed(SIGNAL, timeout_s=1.0)

    assert answer.decision_id.startswith("local-")
    assert answer.decision_id != expected_decision_id(SIGNAL)
    with pytest.raises(ValidationError, match="local"):
        Decision.model_validate(orjson.loads(answer.model_dump_json()))  # cannot pass as a published decision


def test_is_local_when_decision_published_by_the_guard_then_false() -> None:
    tape = TapeBuilder().equity("acct-1", "2024-01-15T10:00:00Z", 100_000)
    tape.signal("acct-1", "AAPL", "2024-01-15T10:30:00Z", signal_id="s1", price=150.0, target_notional=1_000)

    assert not is_local(_guard_decision(tape))


def test_expected_decision_id_when_engine_decides_the_signal_then_ids_equal() -> None:
    tape = TapeBuilder().equity("acct-1", "2024-01-15T10:00:00Z", 100_000)
    tape.signal("acct-1", "NVDA", "2024-01-15T10:30:00Z", signal_id="s1", price=150.0, target_notional=25_000)

    decision = _guard_decision(tape)

    assert expected_decision_id(SIGNAL) == decision.decision_id


def test_expected_decision_id_when_another_symbol_or_account_then_another_id() -> None:
    ids = {
        expected_decision_id(SIGNAL),
        expected_decision_id(SIGNAL.model_copy(update={"symbol": "AAPL"})),
        expected_decision_id(SIGNAL.model_copy(update={"account": "acct-2"})),
        expected_decision_id(SIGNAL.model_copy(update={"signal_id": "s2"})),
    }

    assert len(ids) == 4


@pytest.mark.parametrize("partitions", [1, 2, 4, 12])
def test_decision_partition_when_account_keyed_then_the_producers_default_partitioner(partitions: int) -> None:
    partitioner = DefaultPartitioner()
    all_partitions = list(range(partitions))
    for n in range(300):
        account = f"acct-{n}"
        assert decision_partition(account, partitions) == partitioner(account.encode(), all_partitions, all_partitions)


def test_decision_partition_when_many_accounts_then_every_partition_used() -> None:
    assert {decision_partition(f"A{n:03d}", 4) for n in range(50)} == {0, 1, 2, 3}


def _record(decision: Decision) -> bytes:
    return orjson.dumps(decision.model_dump(mode="json"))


def test_matching_decision_when_id_wanted_then_the_decision_else_none() -> None:
    tape = TapeBuilder().equity("acct-1", "2024-01-15T10:00:00Z", 100_000)
    tape.signal("acct-1", "NVDA", "2024-01-15T10:30:00Z", signal_id="s1", price=150.0, target_notional=25_000)
    decision = _guard_decision(tape)

    assert matching_decision(_record(decision), {decision.decision_id}) == decision
    assert matching_decision(_record(decision), {"dec-other"}) is None
    assert matching_decision(b"not json", {decision.decision_id}) is None
    assert matching_decision(b"[1, 2]", {decision.decision_id}) is None


def test_signed_qty_when_buy_sell_or_deny_then_signed_delta() -> None:
    tape = TapeBuilder().equity("a", "2024-01-15T10:00:00Z", 100_000)
    tape.signal("a", "X", "2024-01-15T10:30:00Z", signal_id="buy", price=100.0, target_notional=1_000)
    tape.fill("a", "X", "BUY", 10, 100.0, "2024-01-15T10:31:00Z")
    tape.signal("a", "X", "2024-01-15T10:32:00Z", signal_id="sell", price=100.0, target_notional=0)
    buy, sell = tape.run().decisions

    assert (buy.action, signed_qty(buy)) == (Action.ALLOW, 10.0)
    assert signed_qty(sell) == -sell.qty < 0
    assert signed_qty(fail_closed(SIGNAL, 1.0)) == 0.0


def test_target_signal_when_seed_001_call_then_a_target_notional_signal_at_the_price() -> None:
    signal = target_signal("acct-1", "AAPL", 151.0, 15_000, 1_705_314_600_000, "c-1")

    assert (signal.target_notional, signal.price, signal.target_weight, signal.direction) == (15_000, 151.0, None, None)
    assert signal.ts == 1_705_314_600_000


def test_settings_when_nothing_given_then_the_workers_config_env_and_security(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "riskguard.yaml"
    config.write_text("kafka: {bootstrap_servers: 'cfg:1', topic_prefix: 'prod.', partitions: 6}\n", encoding="utf-8")
    monkeypatch.setenv("RISKGUARD_CONFIG", str(config))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env:2")
    monkeypatch.setenv("RISKGUARD_PARTITIONS", "8")
    monkeypatch.setenv(USERNAME_ENV, "alice")
    monkeypatch.setenv(PASSWORD_ENV, "s3cret-pass")

    settings = ClientSettings.resolve()

    assert (settings.bootstrap, settings.topic_prefix, settings.partitions) == ("env:2", "prod.", 8)
    assert settings.security.describe() == "SASL_PLAINTEXT SCRAM-SHA-512 as alice"
    assert "s3cret-pass" not in repr(settings)


def test_settings_when_given_then_they_win_over_config_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env:2")
    monkeypatch.setenv("RISKGUARD_PARTITIONS", "8")
    monkeypatch.delenv("RISKGUARD_CONFIG", raising=False)

    settings = ClientSettings.resolve("given:3", "t.", 2)

    assert (settings.bootstrap, settings.topic_prefix, settings.partitions) == ("given:3", "t.", 2)


def test_check_when_client_not_started_then_raises_instead_of_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RISKGUARD_CONFIG", raising=False)
    client = GuardClient("127.0.0.1:1", "t.", 4)

    with pytest.raises(RuntimeError, match="not started"):
        asyncio.run(client.check(SIGNAL, timeout=0.1))


def test_local_decision_when_built_then_is_a_decision_for_type_checkers_and_callers() -> None:
    assert isinstance(fail_closed(SIGNAL, 1.0), Decision)
    assert issubclass(LocalDecision, Decision)


def test_sync_client_when_config_unreadable_then_raises_and_leaves_no_loop_thread(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        SyncGuardClient(config=tmp_path / "missing.yaml")

    assert not [t for t in threading.enumerate() if t.name == "riskguard-client"]


def test_client_import_when_an_execution_service_imports_it_then_faust_and_the_worker_app_stay_out() -> None:
    script = "import sys\nimport streams.client\nprint(' '.join(sorted(sys.modules)))\n"
    loaded = set(
        subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, text=True).stdout.split()
    )

    assert "streams.client" in loaded and "streams.worker.settings" in loaded  # the sequencer's partition rule
    assert not {"faust", "mode", "streams.worker.app", "aiohttp"} & loaded
