"""SASL/SCRAM and TLS against a real local broker started with `riskguard kafka up --sasl --tls-port` (SPEC §8).

One broker for the module, on its own free ports, with a SCRAM-SHA-512 user from the environment:
clients with the user's credentials round-trip messages (SASL_PLAINTEXT and SASL_SSL), clients
without them or with a wrong password are refused, a Faust worker with `streams.security` credentials
consumes and produces (exactly-once, so the broker's own transaction markers travel over SASL too),
and the password appears in no log and no output.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import secrets
import shutil
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from streams.broker import LOG4J_ENV, Broker, answers, down
from streams.security import CA_FILE_ENV, PASSWORD_ENV, USERNAME_ENV, KafkaSecurity
from streams.testing import TapeBuilder
from tests.integration.conftest import ROOT, Deployment, free_port, stop

pytestmark = pytest.mark.integration

VERBOSE_LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=${kafka.logs.dir}/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""

FAUST_ECHO = """\
import sys

import faust

from streams import security

bootstrap, app_id, source, sink, web_port, datadir = sys.argv[1:7]
app = faust.App(
    app_id,
    broker=f"kafka://{bootstrap}",
    broker_credentials=security.faust_credentials(),
    store="memory://",
    datadir=datadir,
    processing_guarantee="exactly_once",
    topic_partitions=1,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    web_port=int(web_port),
    web_host="127.0.0.1",
    web_bind="127.0.0.1",
    key_serializer="raw",
    value_serializer="raw",
)
source_topic = app.topic(source, partitions=1, key_serializer="raw", value_serializer="raw")
sink_topic = app.topic(sink, partitions=1, key_serializer="raw", value_serializer="raw")


@app.agent(source_topic)
async def echo(stream):
    async for value in stream:
        await sink_topic.send(value=b"echo:" + value)


faust.Worker(app, loglevel="info").execute_from_commandline()
"""


@dataclass(frozen=True)
class SaslBroker:
    broker: Broker
    username: str
    password: str
    up_output: str

    @property
    def env(self) -> dict[str, str]:
        return {USERNAME_ENV: self.username, PASSWORD_ENV: self.password}

    @property
    def tls_env(self) -> dict[str, str]:
        return {**self.env, CA_FILE_ENV: str(self.broker.ca_file)}

    def security(self, **overrides: str) -> KafkaSecurity:
        return KafkaSecurity.from_env({**self.env, **overrides})

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.broker.logs.glob("*")) if p.is_file())


SHARED_PORTS = {9092, 9093, 19092, 19093}  # other brokers' ports: never ours


def _free_ports() -> tuple[int, int]:
    """A client port whose neighbour (the controller) is free too, and a third port for SASL_SSL."""
    for _ in range(50):
        port, tls = free_port(), free_port()
        taken = {port, port + 1, tls} & SHARED_PORTS or tls in (port, port + 1)
        if port < 65000 and not taken and not answers("127.0.0.1", port + 1, timeout=0.2):
            return port, tls
    raise RuntimeError("no free ports on 127.0.0.1")


def _forget(broker: Broker) -> None:
    for path in (broker.data, broker.logs, broker.security):
        shutil.rmtree(path, ignore_errors=True)
    broker.properties.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    port, tls_port = _free_ports()
    broker = Broker(port=port, controller_port=port + 1, sasl=True, tls_port=tls_port)
    _forget(broker)  # the ports are free, so nothing runs on leftovers of an earlier broker there
    log4j = tmp_path_factory.mktemp("log4j") / "log4j.properties"
    log4j.write_text(VERBOSE_LOG4J, encoding="utf-8")  # INFO everywhere: the config dump and SASL lines too
    username, password = f"rg-{uuid.uuid4().hex[:8]}", f"pw-{secrets.token_urlsafe(24)}"
    env = {**os.environ, USERNAME_ENV: username, PASSWORD_ENV: password, LOG4J_ENV: str(log4j)}
    try:
        started = subprocess.run(
            [
                sys.executable,
                "-m",
                "streams.cli",
                "kafka",
                "up",
                "--sasl",
                "--port",
                str(port),
                "--tls-port",
                str(tls_port),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert started.returncode == 0, started.stderr[-3000:]
        yield SaslBroker(broker, username, password, started.stdout + started.stderr)
    finally:
        down(broker)
        _forget(broker)


async def _round_trip(bootstrap: str, security: KafkaSecurity, topic: str, timeout: float = 60) -> list[bytes]:
    auth = security.aiokafka_kwargs()

    async def run() -> list[bytes]:
        payload = f"hello-{uuid.uuid4().hex}".encode()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **auth)
        await producer.start()
        try:
            await producer.send_and_wait(topic, payload)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **auth)
        await consumer.start()
        try:
            received: list[bytes] = []
            while not received:
                batches = await consumer.getmany(timeout_ms=500)
                received = [r.value for records in batches.values() for r in records if r.value == payload]
            return received
        finally:
            await consumer.stop()

    return await asyncio.wait_for(run(), timeout)


async def _refused(bootstrap: str, security: KafkaSecurity, timeout: float = 30) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **security.aiokafka_kwargs())
    try:
        await asyncio.wait_for(producer.start(), timeout)
    finally:
        await producer.stop()


def _wait_for_log(sasl: SaslBroker, text: str, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in sasl.logs():
            return True
        time.sleep(0.2)
    return False


def test_sasl_scram_when_credentials_from_env_then_a_message_round_trips(sasl_broker: SaslBroker) -> None:
    security = sasl_broker.security()

    received = asyncio.run(_round_trip(sasl_broker.broker.bootstrap, security, "rg.sec.plain"))

    assert (security.protocol, security.mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert len(received) == 1


def test_sasl_ssl_when_ca_file_is_the_brokers_certificate_then_a_message_round_trips(sasl_broker: SaslBroker) -> None:
    security = KafkaSecurity.from_env(sasl_broker.tls_env)

    received = asyncio.run(_round_trip(sasl_broker.broker.tls_bootstrap or "", security, "rg.sec.tls"))

    assert security.protocol == "SASL_SSL"
    assert len(received) == 1


def test_client_without_credentials_when_connecting_then_refused_in_the_sasl_handshake(
    sasl_broker: SaslBroker,
) -> None:
    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        asyncio.run(_refused(sasl_broker.broker.bootstrap, KafkaSecurity()))

    assert _wait_for_log(sasl_broker, "Unexpected Kafka request of type METADATA during SASL handshake")


def test_client_with_wrong_password_when_connecting_then_sasl_authentication_fails(
    sasl_broker: SaslBroker, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = sasl_broker.security(**{PASSWORD_ENV: "not-" + sasl_broker.password})

    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        asyncio.run(_refused(sasl_broker.broker.bootstrap, wrong))

    assert "SaslAuthenticationFailed" in caplog.text
    assert _wait_for_log(sasl_broker, "invalid credentials with SASL mechanism SCRAM-SHA-512")
    assert sasl_broker.password not in caplog.text


def test_sasl_ssl_when_broker_certificate_not_trusted_then_refused_by_the_client(
    sasl_broker: SaslBroker, caplog: pytest.LogCaptureFixture
) -> None:
    untrusted = sasl_broker.security(RISKGUARD_KAFKA_SECURITY_PROTOCOL="SASL_SSL")  # the system store only

    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        asyncio.run(_refused(sasl_broker.broker.tls_bootstrap or "", untrusted))

    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_faust_worker_when_credentials_from_streams_security_then_consumes_and_produces_exactly_once(
    sasl_broker: SaslBroker, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    source, sink = f"rg.sec.in.{tag}", f"rg.sec.out.{tag}"
    security = sasl_broker.security()
    bootstrap = sasl_broker.broker.bootstrap
    script = tmp_path / "echo_app.py"
    script.write_text(FAUST_ECHO, encoding="utf-8")
    log_path = tmp_path / "worker.log"

    async def prepare() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security.aiokafka_kwargs())
        await admin.start()
        try:
            await admin.create_topics([NewTopic(source, 1, 1), NewTopic(sink, 1, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **security.aiokafka_kwargs())
        await producer.start()
        try:
            await producer.send_and_wait(source, b"ping")
        finally:
            await producer.stop()

    async def echoed(timeout: float) -> list[bytes]:
        consumer = AIOKafkaConsumer(
            sink,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            **security.aiokafka_kwargs(),
        )
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                values = [r.value for records in batches.values() for r in records]
                if values:
                    return values
            return []
        finally:
            await consumer.stop()

    asyncio.run(asyncio.wait_for(prepare(), 60))
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, str(script), bootstrap, f"rg-sec-{tag}", source, sink, str(free_port()), str(tmp_path)],
            cwd=ROOT,
            env={**os.environ, **sasl_broker.env, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        values = asyncio.run(asyncio.wait_for(echoed(120), 150))
    finally:
        stop(worker)
    output = log_path.read_text(errors="replace")

    assert values == [b"echo:ping"], output[-3000:]
    assert sasl_broker.password not in output


def _app_has_credentials() -> bool:
    from streams.worker import build_app

    return "broker_credentials" in inspect.getsource(build_app)


@pytest.mark.skipif(not _app_has_credentials(), reason="build_app does not pass broker_credentials yet")
def test_riskguard_worker_when_sasl_env_then_publish_decide_record_and_audit_through_scram_and_tls(
    sasl_broker: SaslBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in sasl_broker.env.items():
        monkeypatch.setenv(name, value)
    tag = uuid.uuid4().hex[:8]
    config = tmp_path / "riskguard.yaml"
    config.write_text(f"kafka: {{topic_prefix: 's{tag}.', partitions: 2}}\n", encoding="utf-8")
    deployment = Deployment(sasl_broker.broker.bootstrap, config, f"rg-sec-{tag}", tmp_path)
    tape = TapeBuilder().equity("a", "2024-01-15T14:00:00Z", 100_000)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", signal_id="s1", price=10.0, target_notional=1_000)
    path = tmp_path / "tape.jsonl"
    path.write_bytes(b"\n".join(tape.to_bytes()) + b"\n")
    out = tmp_path / "decisions.jsonl"

    worker = deployment.start_worker("w1", store="memory://")
    try:
        published = deployment.cli("publish", str(path), "--ordered", timeout=180)
        recorded = deployment.cli(
            "record", "--topics", "decisions", "--out", str(out), "--idle", "3", "--drained", deployment.app_id
        )
    finally:
        stop(worker)
    audited = deployment.cli("audit", "--json", "--grace", "2")
    monkeypatch.setenv(CA_FILE_ENV, str(sasl_broker.broker.ca_file))  # SASL_SSL: the same variables, plus the CA
    over_tls = Deployment(sasl_broker.broker.tls_bootstrap or "", config, deployment.app_id, tmp_path)
    audited_tls = over_tls.cli("audit", "--json", "--grace", "2")
    outputs = published.stdout + published.stderr + recorded.stdout + recorded.stderr + audited.stdout + audited.stderr
    outputs += audited_tls.stdout + audited_tls.stderr
    outputs += (tmp_path / "w1.log").read_text(errors="replace")
    decisions = [orjson.loads(line)["value"] for line in out.read_bytes().splitlines()] if out.exists() else []

    assert published.returncode == 0, published.stderr
    assert recorded.returncode == 0, recorded.stderr
    assert [d["account"] for d in decisions] == ["a"], outputs[-3000:]
    assert audited.returncode == 0, audited.stderr
    assert orjson.loads(audited.stdout)["counts"]["verified_decisions"] == 1
    assert audited_tls.returncode == 0, audited_tls.stderr
    assert orjson.loads(audited_tls.stdout)["counts"]["verified_decisions"] == 1
    assert sasl_broker.password not in outputs


def test_password_when_broker_started_and_clients_refused_then_in_no_log_output_or_properties(
    sasl_broker: SaslBroker,
) -> None:
    broker = sasl_broker.broker
    inter_broker = (broker.security / "interbroker.secret").read_text(encoding="utf-8").strip()
    logs = sasl_broker.logs()

    assert "Kafka Server started" in logs and "sasl.enabled.mechanisms = [SCRAM-SHA-512]" in logs  # verbose
    assert sasl_broker.password not in logs
    assert inter_broker not in logs
    assert sasl_broker.password not in sasl_broker.up_output
    assert sasl_broker.password not in broker.properties.read_text(encoding="utf-8")
    assert sasl_broker.username in (broker.security / "scram-user.json").read_text(encoding="utf-8")
    assert sasl_broker.password not in (broker.security / "scram-user.json").read_text(encoding="utf-8")
    assert not (broker.security / "format.args").exists()
    assert sasl_broker.password not in repr(sasl_broker.security()) + str(sasl_broker.security())


def test_broker_secrets_when_written_then_readable_by_the_owner_only(sasl_broker: SaslBroker) -> None:
    broker = sasl_broker.broker
    private = [broker.properties, *(p for p in broker.security.iterdir() if p.name != "ca.pem")]

    assert stat.S_IMODE(broker.security.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in private} == {p.name: 0o600 for p in private}
    assert "BEGIN CERTIFICATE" in broker.ca_file.read_text(encoding="utf-8")
