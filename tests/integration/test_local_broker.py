"""The project's own broker script against a real Kafka 3.9 (KRaft on 127.0.0.1), with Kafka's own tools."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import LOG4J, Broker, down, status, up
from tests.integration.conftest import free_port_pair

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    port = free_port_pair()  # below the ephemeral range: no outgoing connection takes it meanwhile
    local = Broker(port=port, controller_port=port + 1)
    up(local, timeout=120)
    try:
        yield local
    finally:
        down(local)


def _tool(broker: Broker, main: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "java",
            "-cp",
            str(broker.libs / "*"),
            f"-Dlog4j.configuration=file:{LOG4J}",
            f"-Dkafka.logs.dir={broker.logs}",
            main,
            "--bootstrap-server",
            broker.bootstrap,
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_up_when_started_then_kafka_console_tools_round_trip_a_message(broker: Broker) -> None:
    produced = _tool(broker, "kafka.tools.ConsoleProducer", "--topic", "rg.smoke", stdin='{"hello": 1}\n')
    consumed = _tool(
        broker,
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        "--topic",
        "rg.smoke",
        "--from-beginning",
        "--max-messages",
        "1",
        "--isolation-level",
        "read_committed",
        "--timeout-ms",
        "60000",
    )

    assert produced.returncode == 0, produced.stderr
    assert consumed.stdout.strip() == '{"hello": 1}', consumed.stderr


def test_up_when_already_answering_then_idempotent_and_status_names_our_pid(broker: Broker) -> None:
    assert up(broker).startswith("already answering")
    assert status(broker).startswith("running (pid")


def test_down_when_pid_file_names_another_process_then_it_is_left_alone(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "30"])
    fake = Broker(root=tmp_path, port=1, controller_port=2)
    fake.pid_file.write_text(str(stranger.pid))
    try:
        assert down(fake) == "no broker started by riskguard is running"
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
