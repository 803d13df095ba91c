"""The integration tests' broker choice (tests/integration/brokers.py): given, testcontainers or the script."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from streams import broker
from streams.broker import Broker
from tests.integration import brokers


def engine_answers() -> tuple[bool, str]:
    return True, "Docker 27.3.1"


def no_engine() -> tuple[bool, str]:
    return False, "DockerException: Error while fetching server API version"


def engine_not_asked() -> tuple[bool, str]:
    raise AssertionError("the Docker engine is not probed when the given broker answers")


def test_choose_when_given_bootstrap_answers_then_given_without_probing_docker() -> None:
    choice = brokers.choose("127.0.0.1:19092", reachable=lambda _: True, probe=engine_not_asked)

    assert choice.kind == "given"
    assert "127.0.0.1:19092" in choice.reason


@pytest.mark.parametrize("given", [None, "127.0.0.1:1"])
def test_choose_when_docker_engine_answers_then_testcontainers_kafka_3_9_kraft(given: str | None) -> None:
    choice = brokers.choose(given, reachable=lambda _: False, probe=engine_answers)

    assert choice.kind == "testcontainers"
    assert "Docker 27.3.1" in choice.reason and "KRaft" in choice.reason
    assert re.fullmatch(r"confluentinc/cp-kafka:7\.9\.\d+", brokers.KAFKA_IMAGE), "Confluent 7.9 = Apache Kafka 3.9"


@pytest.mark.parametrize("given", [None, "127.0.0.1:1"])
def test_choose_when_no_docker_engine_answers_then_the_project_script_with_the_reason(given: str | None) -> None:
    choice = brokers.choose(given, reachable=lambda _: False, probe=no_engine)

    assert choice.kind == "script"
    assert "no Docker engine" in choice.reason and "DockerException" in choice.reason


def test_choose_when_decided_then_the_choice_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="riskguard.tests.broker"):
        brokers.choose(None, reachable=lambda _: False, probe=no_engine)
        brokers.choose(None, reachable=lambda _: False, probe=engine_answers)

    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "kafka broker for the tests: script",
        "kafka broker for the tests: testcontainers",
    ]


def test_docker_engine_when_nothing_listens_at_docker_host_then_no_engine_with_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")

    engine, detail = brokers.docker_engine()

    assert engine is False
    assert detail.startswith("DockerException")


def test_container_env_when_compared_with_the_script_broker_then_the_same_test_settings(tmp_path: Path) -> None:
    script = Broker(root=tmp_path)
    broker._write_properties(script)
    written = set(script.properties.read_text(encoding="utf-8").splitlines())

    for name, value in brokers.CONTAINER_ENV.items():
        key = name.removeprefix("KAFKA_").lower().replace("_", ".")
        assert f"{key}={value}" in written, f"{name}={value}: the script broker does not set {key}={value}"
