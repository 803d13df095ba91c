"""The worker's web views, signed POST /rebalance and /metrics, against a running worker on the real broker."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.core.levels.account.controls import sign
from streams.testing import TapeBuilder
from tests.integration.conftest import ROOT, Deployment, stop

pytestmark = pytest.mark.integration

KEY = b"web-test-key"
CONFIG = """
rebalance: {targets: {X: 0.5, Y: 0.5}, min_trade_value: 100}
budget: {enabled: true}
"""


def _get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _post(port: int, path: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - http to 127.0.0.1 only
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def _tape() -> TapeBuilder:
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000).equity("b", "2024-01-15T14:00:00Z", 50_000)
    tape.flat_bar("X", "2024-01-15T14:00:00Z", 10.0).flat_bar("Y", "2024-01-15T14:00:00Z", 20.0)
    tape.fill("a", "X", "BUY", 100, 10.0, "2024-01-15T14:00:10Z")
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=10.0, target_notional=5_000)
    tape.signal("b", "Y", "2024-01-15T14:01:30Z", price=20.0, target_notional=2_000)
    tape.raw('{"topic": "signals", "key": "a", "value": {"not": "a signal"}}')
    return tape


def _replayed_view(deployment: Deployment, tape: Path, account: str, view: str) -> Any:
    command = [sys.executable, "-m", "streams.cli", "state", str(tape), "--config", str(deployment.config)]
    result = subprocess.run(
        [*command, "--account", account, "--view", view],
        cwd=ROOT,
        env=deployment.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_views_when_worker_has_applied_a_tape_then_state_and_budget_match_the_replay_views(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISKGUARD_CONTROL_KEY", KEY.decode())
    deployment.config.write_text(CONFIG + deployment.config.read_text(encoding="utf-8"), encoding="utf-8")
    path = deployment.workdir / "tape.jsonl"
    path.write_bytes(b"\n".join(_tape().to_bytes()) + b"\n")
    worker = deployment.start_worker("w1")
    port = deployment.ports["w1"]
    try:
        assert deployment.cli("publish", str(path), "--ordered").returncode == 0
        drained = deployment.cli("record", "--topics", "decisions", "--out", str(deployment.workdir / "d.jsonl"))
        assert drained.returncode == 0
        for view, route in (
            ("state", "/accounts/{}/state"),
            ("budget", "/budget/{}"),
            ("utilization", "/budget/{}/utilization"),
            ("recommendations", "/budget/{}/recommendations"),
        ):
            for account in ("a", "b"):
                status, served = _get(port, route.format(account))
                assert status == 200, (route, served)
                assert served == _replayed_view(deployment, path, account, view), (view, account)
        status, missing = _get(port, "/accounts/nobody/state")
        assert status == 404
        assert "nobody" in missing["error"] or "partition" in missing
    finally:
        stop(worker)


def test_post_rebalance_when_unsigned_forged_or_signed_then_only_the_signed_one_runs(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISKGUARD_CONTROL_KEY", KEY.decode())
    deployment.config.write_text(CONFIG + deployment.config.read_text(encoding="utf-8"), encoding="utf-8")
    path = deployment.workdir / "tape.jsonl"
    path.write_bytes(b"\n".join(_tape().to_bytes()) + b"\n")
    worker = deployment.start_worker("w1")
    port = deployment.ports["w1"]
    control: dict[str, Any] = {
        "command": "REBALANCE",
        "account": "a",
        "ts": "2024-01-15T14:05:00Z",
        "issued_by": "ops",
        "nonce": "web-1",
        "expires_at": "2024-01-15T15:00:00Z",
        "params": {"preview": True},
    }
    try:
        assert deployment.cli("publish", str(path), "--ordered").returncode == 0
        unsigned = _post(port, "/rebalance/a", orjson.dumps(control))
        forged = _post(port, "/rebalance/a", orjson.dumps({**control, "signature": sign(control, b"wrong")}))
        wrong_account = _post(port, "/rebalance/b", orjson.dumps({**control, "signature": sign(control, KEY)}))
        signed = _post(port, "/rebalance/a", orjson.dumps({**control, "signature": sign(control, KEY)}))
        recorded = deployment.workdir / "runs.jsonl"
        assert (
            deployment.cli(
                "record",
                "--topics",
                "rebalance_runs",
                "--out",
                str(recorded),
                "--idle",
                "3",
                "--drained",
                deployment.app_id,
            ).returncode
            == 0
        )
    finally:
        stop(worker)
    assert KEY not in (deployment.workdir / "w1.log").read_bytes(), "the control key never reaches the logs"
    assert unsigned[0] == 403 and "security" in unsigned[1]["error"]
    assert forged[0] == 403
    assert wrong_account[0] == 400 and "not 'b'" in wrong_account[1]["error"]
    assert signed == (202, {"accepted": True, "account": "a", "nonce": "web-1"})
    runs = [orjson.loads(line)["value"] for line in recorded.read_bytes().splitlines()]
    assert [(r["account"], r["status"], r["trigger"]) for r in runs] == [("a", "preview", "control")]


def test_metrics_when_tape_applied_then_each_counter_moved_by_what_was_published(deployment: Deployment) -> None:
    path = deployment.workdir / "tape.jsonl"
    path.write_bytes(b"\n".join(_tape().to_bytes()) + b"\n")
    worker = deployment.start_worker("w1")
    port = deployment.ports["w1"]
    try:
        before = _metrics(port)
        assert deployment.cli("publish", str(path), "--ordered").returncode == 0
        recorded = deployment.workdir / "out.jsonl"
        assert (
            deployment.cli(
                "record",
                "--topics",
                "decisions,deadletter",
                "--out",
                str(recorded),
                "--idle",
                "3",
                "--drained",
                deployment.app_id,
            ).returncode
            == 0
        )
        after = _metrics(port)
    finally:
        stop(worker)
    envelopes = [orjson.loads(line) for line in recorded.read_bytes().splitlines()]
    decisions = [e["value"] for e in envelopes if e["topic"] == "decisions"]
    letters = [e["value"] for e in envelopes if e["topic"] == "deadletter"]
    allowed = sum(d["action"] == "ALLOW" for d in decisions)
    assert allowed >= 1 and len(letters) == 1

    def moved(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert moved("riskguard_orders_allowed_total") == allowed
    assert moved("riskguard_dead_letters_total{topic=signals}") == 1
    assert moved("riskguard_decision_latency_seconds_count") == len(decisions)
    assert moved("riskguard_halts_total{state=ACTIVE}") >= 0
    assert any(name.startswith("faust_") for name in after), "Faust's own sensor shares the registry"
    lines = [
        orjson.loads(line) for line in (deployment.workdir / "w1.log").read_bytes().splitlines() if line[:1] == b"{"
    ]
    logged = [line for line in lines if line.get("event") == "policy_decision"]
    assert sorted(line["decision_id"] for line in logged) == sorted(d["decision_id"] for d in decisions)
    assert any(line.get("logger", "").startswith(("faust", "aiokafka")) for line in lines), "stdlib logs as JSON"
    assert (
        "riskguard_consumer_lag" in {name.split("{")[0] for name in after} or moved("faust_messages_received_total") > 0
    )
