"""Reliability on the real broker (SPEC §8): state survives kill -9; redelivery changes nothing."""

from __future__ import annotations

import signal
from pathlib import Path

import orjson
import pytest

from streams.testing import TapeBuilder
from tests.integration.conftest import Deployment, stop

pytestmark = pytest.mark.integration
KEY = b"reliability-key"


def _write(deployment: Deployment, name: str, tape: TapeBuilder) -> Path:
    path = deployment.workdir / name
    path.write_bytes(b"\n".join(tape.to_bytes()) + b"\n")
    return path


def _record(deployment: Deployment, topics: str) -> list[dict[str, object]]:
    out = deployment.workdir / f"recorded-{topics.replace(',', '-')}.jsonl"
    result = deployment.cli(
        "record", "--topics", topics, "--out", str(out), "--idle", "3", "--drained", deployment.app_id
    )
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]


def test_halt_and_shutdown_when_worker_killed_9_and_restarted_then_unchanged_until_signed_resume(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISKGUARD_CONTROL_KEY", KEY.decode())
    with deployment.config.open("a", encoding="utf-8") as handle:
        handle.write("accounts: {a: {profile: seed003}, b: {profile: standard}}\n")
    first = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000).equity("b", "2024-01-15T14:00:00Z", 100_000)
    first.equity("a", "2024-01-15T14:05:00Z", 89_000)  # 11 % below the peak: HALTED
    first.equity("b", "2024-01-15T14:05:00Z", 85_000)  # 15 % below the initial balance: SHUTDOWN
    worker = deployment.start_worker("w1")
    assert deployment.cli("publish", str(_write(deployment, "first.jsonl", first)), "--ordered").returncode == 0
    halts_before = [e["value"] for e in _record(deployment, "halts")]
    worker.send_signal(signal.SIGKILL)
    worker.wait()

    second = TapeBuilder()
    second.signal("a", "X", "2024-01-15T14:10:00Z", signal_id="sa", price=10.0, target_notional=1_000)
    second.signal("b", "X", "2024-01-15T14:10:00Z", signal_id="sb", price=10.0, target_notional=1_000)
    second.equity("b", "2024-01-16T14:00:00Z", 95_000)  # a day roll does not lift SHUTDOWN
    second.control("RESUME", "b", "2024-01-16T14:01:00Z", "resume-b", "2024-01-16T15:00:00Z", KEY)
    worker = deployment.start_worker("w1")  # same app id and RocksDB directory
    try:
        assert deployment.cli("publish", str(_write(deployment, "second.jsonl", second)), "--ordered").returncode == 0
        envelopes = _record(deployment, "halts,decisions")
    finally:
        stop(worker)

    assert [(h["account"], h["state"], h["reason"]) for h in halts_before] == [  # type: ignore[index]
        ("a", "HALTED", "intraday_drawdown"),
        ("b", "SHUTDOWN", "max_total_loss"),
    ]
    halts = [
        (e["value"]["account"], e["value"]["state"], e["value"]["reason"]) for e in envelopes if e["topic"] == "halts"
    ]  # type: ignore[index]
    assert halts == [
        ("a", "HALTED", "intraday_drawdown"),
        ("b", "SHUTDOWN", "max_total_loss"),
        ("b", "ACTIVE", "operator_resume"),
    ]
    signals = {e["value"]["source_id"]: e["value"] for e in envelopes if e["topic"] == "decisions"}  # type: ignore[index]
    assert (signals["sa"]["action"], signals["sa"]["reason"]) == ("DENY", "account_halted")
    assert (signals["sb"]["action"], signals["sb"]["reason"]) == ("DENY", "account_shutdown")
