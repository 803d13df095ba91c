"""The guards as Faust agents on the real broker give exactly the decisions of `riskguard replay`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.config import load_config
from streams.broker import LOG4J, Broker
from streams.gen import GenParams, write_tape
from tests.integration.conftest import Deployment, stop

pytestmark = pytest.mark.integration


def _tape(deployment: Deployment) -> Path:
    tape = deployment.workdir / "tape.jsonl"
    params = GenParams(symbols=6, accounts=3, days=1, session_minutes=90, seed=11, signal_every=5)
    with tape.open("wb") as sink:
        write_tape(params, sink, load_config(deployment.config))
    return tape


def _decisions(path: Path) -> tuple[dict[str, Any], int]:
    found: dict[str, Any] = {}
    duplicates = 0
    for line in path.read_bytes().splitlines():
        envelope = orjson.loads(line)
        if envelope["topic"] == "decisions":
            value = envelope["value"]
            duplicates += value["decision_id"] in found
            found[value["decision_id"]] = value
    return found, duplicates


def test_pipeline_when_tape_published_in_order_then_decisions_identical_to_replay(deployment: Deployment) -> None:
    tape = _tape(deployment)
    worker = deployment.start_worker("w1")
    try:
        published = deployment.cli("publish", str(tape), "--ordered")
        recorded = deployment.workdir / "recorded.jsonl"
        got = deployment.cli(
            "record", "--topics", "decisions,halts,events,deadletter", "--out", str(recorded), "--idle", "4"
        )
    finally:
        stop(worker)
    replayed = deployment.workdir / "replayed.jsonl"
    deployment.cli("replay", str(tape), "--out", str(replayed))

    assert published.returncode == 0, published.stderr
    assert got.returncode == 0, got.stderr
    pipeline, duplicates = _decisions(recorded)
    expected, _ = _decisions(replayed)
    assert len(expected) > 20
    assert duplicates == 0
    assert pipeline.keys() == expected.keys()
    assert [k for k in expected if pipeline[k] != expected[k]] == []
    audit = deployment.cli("verify", str(tape), str(recorded))
    assert audit.returncode == 0, audit.stderr


def test_decisions_topic_when_read_by_kafka_console_consumer_then_valid_json(
    deployment: Deployment, kafka: str
) -> None:
    tape = _tape(deployment)
    worker = deployment.start_worker("w1", store="memory://")
    try:
        assert deployment.cli("publish", str(tape), "--ordered").returncode == 0
        broker = Broker()
        topic = load_config(deployment.config).kafka.topic_prefix + "risk.decisions"
        consumed = subprocess.run(
            [
                "java",
                "-cp",
                str(broker.libs / "*"),
                f"-Dlog4j.configuration=file:{LOG4J}",
                f"-Dkafka.logs.dir={deployment.workdir}",
                "org.apache.kafka.tools.consumer.ConsoleConsumer",
                "--bootstrap-server",
                kafka,
                "--topic",
                topic,
                "--from-beginning",
                "--isolation-level",
                "read_committed",
                "--timeout-ms",
                "15000",
                "--property",
                "print.key=true",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        stop(worker)
    rows = [line.split("\t", 1) for line in consumed.stdout.splitlines() if "\t" in line]
    assert len(rows) > 20, consumed.stderr[-2000:]
    for key, value in rows:
        decision = orjson.loads(value)
        assert decision["account"] == key
        assert decision["action"] in ("ALLOW", "CLIP", "DENY", "NOOP")
