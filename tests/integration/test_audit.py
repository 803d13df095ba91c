"""`riskguard audit` on the real broker: a tape published unordered re-derives from the sequenced log alone."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from schemas.config import load_config
from streams.gen import GenParams, write_tape
from streams.kafka_io import _partitions, wait_drained
from streams.topology import Topics
from streams.worker.settings import partition_for
from tests.integration.conftest import ROOT, Deployment, delete_topics, free_port, stop

pytestmark = pytest.mark.integration

PRODUCERS = 3


def _tape(deployment: Deployment) -> Path:
    tape = deployment.workdir / "tape.jsonl"
    params = GenParams(symbols=6, accounts=4, days=1, session_minutes=90, seed=19, signal_every=5)
    with tape.open("wb") as sink:
        write_tape(params, sink, load_config(deployment.config))
    return tape


def _publish_unordered(deployment: Deployment, tape: Path) -> None:
    """The tape's lines dealt round-robin to several producers that publish at once, none of them --ordered."""
    lines = tape.read_bytes().splitlines()
    parts = []
    for k in range(PRODUCERS):
        part = deployment.workdir / f"part{k}.jsonl"
        part.write_bytes(b"\n".join(lines[k::PRODUCERS]) + b"\n")
        parts.append(part)
    producers = [
        subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "publish", str(part), "--config", str(deployment.config)],
            cwd=ROOT,
            env=deployment.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for part in parts
    ]
    for producer in producers:
        _, errors = producer.communicate(timeout=180)
        assert producer.returncode == 0, errors.decode(errors="replace")[-2000:]
    topics = Topics.from_settings(load_config(deployment.config).kafka)
    assert asyncio.run(wait_drained(topics, deployment.bootstrap, deployment.app_id, timeout=180))


def _deployment(kafka: str, workdir: Path) -> Deployment:
    tag = uuid.uuid4().hex[:8]
    config = workdir / "riskguard.yaml"
    config.write_text(f"kafka: {{topic_prefix: 'a{tag}.', partitions: 4}}\n", encoding="utf-8")
    return Deployment(kafka, config, f"rg-audit-{tag}", workdir)


def _cleanup(deployment: Deployment) -> None:
    if os.environ.get("RISKGUARD_TEST_KEEP_TOPICS") != "1":
        prefix = load_config(deployment.config).kafka.topic_prefix
        delete_topics(deployment.bootstrap, (prefix, deployment.app_id))


@pytest.fixture(scope="module")
def published(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One worker that consumed a tape published unordered by several producers, then stopped."""
    deployment = _deployment(kafka, tmp_path_factory.mktemp("audit"))
    tape = _tape(deployment)
    worker = deployment.start_worker("w1")
    try:
        _publish_unordered(deployment, tape)
    finally:
        stop(worker)
    yield deployment
    _cleanup(deployment)


def _audit(deployment: Deployment, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = deployment.cli("audit", "--json", "--grace", "2", *args, timeout=300)
    report = orjson.loads(done.stdout) if done.stdout.strip() else {}
    return done, report


def _decisions(path: Path) -> dict[str, Any]:
    found = {}
    for line in path.read_bytes().splitlines():
        envelope = orjson.loads(line)
        if envelope["topic"] == "decisions":
            found[envelope["value"]["decision_id"]] = envelope["value"]
    return found


def test_audit_when_tape_published_unordered_through_one_worker_then_every_decision_re_derives(
    published: Deployment,
) -> None:
    done, report = _audit(published)

    assert done.returncode == 0, done.stderr[-3000:]
    assert report["ok"] is True
    counts = report["counts"]
    assert counts["verified_decisions"] > 20
    assert counts["verified"] == counts["recorded"] == counts["derived"]
    assert report["findings"] == []


def test_sequenced_recording_when_replayed_and_verified_then_gives_the_published_decisions(
    published: Deployment,
) -> None:
    log = published.workdir / "sequenced.jsonl"
    outputs = published.workdir / "outputs.jsonl"
    recorded = published.cli("record", "--topics", "sequenced", "--out", str(log), "--idle", "3")
    published.cli("record", "--topics", "decisions,halts", "--out", str(outputs), "--idle", "3")
    replayed = published.workdir / "replayed.jsonl"
    replay = published.cli("replay", str(log), "--out", str(replayed))
    verify = published.cli("verify", str(log), str(outputs))

    assert recorded.returncode == 0, recorded.stderr
    assert {orjson.loads(line)["partition"] for line in log.read_bytes().splitlines()} == {0, 1, 2, 3}
    assert replay.returncode == 0, replay.stderr
    expected = _decisions(outputs)
    assert len(expected) > 20
    assert _decisions(replayed) == expected
    assert verify.returncode == 0, verify.stderr


async def _tamper(deployment: Deployment) -> dict[str, Any]:
    """Produce a copy of a published ALLOW/CLIP decision with another quantity (same id) to the decisions topic."""
    topic = Topics.from_settings(load_config(deployment.config).kafka).name("decisions")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=deployment.bootstrap, isolation_level="read_committed", auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        behind = set(parts)
        while behind and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen += [orjson.loads(record.value) for record in records]
            behind = {tp for tp in behind if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    # An ALLOW/CLIP when there is one; an unordered publish may have let every signal reach the sequencer
    # before its account's first equity (all DENY equity_unknown): a DENY given a quantity is tampered too.
    traded = [value for value in seen if value["action"] in ("ALLOW", "CLIP")] or seen
    assert traded, "no decision was published"
    original = traded[len(traded) // 2]
    forged = {**original, "qty": original["qty"] + 1}
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap)
    await producer.start()
    try:
        partition = partition_for(original["account"], 4)
        await producer.send_and_wait(topic, orjson.dumps(forged), key=original["account"].encode(), partition=partition)
    finally:
        await producer.stop()
    return original


def _metric(port: int, name: str, labels: str = "") -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
        text = reply.read().decode()
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def _audit_events(deployment: Deployment, ident: str, kind: str, timeout: float) -> list[dict[str, Any]]:
    """The `audit_mismatch` events of finding `kind` about output `ident` on the events topic, once there is one."""
    topic = Topics.from_settings(load_config(deployment.config).kafka).name("events")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=deployment.bootstrap, isolation_level="read_committed", auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        parts = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout
        while not found and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for record in records:
                    value = orjson.loads(record.value)
                    details = value["details"]
                    if value["kind"] == "audit_mismatch" and details["id"] == ident and details["finding"] == kind:
                        found.append(value)
    finally:
        await consumer.stop()
    return found


def test_decision_when_tampered_with_on_the_topic_then_follow_reports_it_within_seconds_and_audit_fails_naming_it(
    published: Deployment,
) -> None:
    port = free_port()
    log = (published.workdir / "follow.log").open("wb")
    follower = subprocess.Popen(
        [
            *(sys.executable, "-m", "streams.cli", "audit", "--follow", "--config", str(published.config)),
            *("--metrics-port", str(port), "--grace", "5"),
        ],
        cwd=ROOT,
        env=published.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        caught_up = False
        while not caught_up and time.monotonic() < deadline and follower.poll() is None:
            time.sleep(0.5)
            try:
                verified = _metric(port, "riskguard_audit_verified_total", '{topic="decisions"}')
                lag = _metric(port, "riskguard_audit_lag", '{topic="decisions"}')
            except OSError:
                continue
            caught_up = verified > 20 and lag == 0
        assert caught_up, (published.workdir / "follow.log").read_text(errors="replace")[-3000:]
        assert _metric(port, "riskguard_audit_findings_total", '{kind="mismatch"}') == 0

        tampered_at = time.monotonic()
        original = asyncio.run(_tamper(published))
        events = asyncio.run(_audit_events(published, original["decision_id"], "mismatch", timeout=20))
        reported_after = time.monotonic() - tampered_at
        mismatches = _metric(port, "riskguard_audit_findings_total", '{kind="mismatch"}')
    finally:
        stop(follower)
        log.close()

    assert events, (published.workdir / "follow.log").read_text(errors="replace")[-3000:]
    assert reported_after < 15
    assert events[0]["account"] == original["account"]
    assert "qty" in events[0]["details"]["detail"]
    assert mismatches >= 1

    done, report = _audit(published)
    assert done.returncode == 1
    named = [f for f in report["findings"] if f["id"] == original["decision_id"]]
    assert sorted(f["kind"] for f in named) == ["facts", "mismatch"]  # the copy does not follow from its facts either
    assert original["decision_id"] in done.stderr


def test_audit_when_two_workers_share_the_partitions_of_an_unordered_tape_then_every_decision_re_derives(
    kafka: str, tmp_path: Path
) -> None:
    deployment = _deployment(kafka, tmp_path)
    tape = _tape(deployment)
    first = deployment.start_worker("w1", store="memory://")
    second = deployment.start_worker("w2", store="memory://")
    try:
        _publish_unordered(deployment, tape)
        alive = first.poll() is None and second.poll() is None
        done, report = _audit(deployment)
    finally:
        stop(first)
        stop(second)
        _cleanup(deployment)

    assert alive
    assert done.returncode == 0, done.stderr[-3000:]
    assert report["counts"]["verified_decisions"] > 20
    assert report["findings"] == []
