"""Which Kafka broker the integration tests run on, and the testcontainers one.

In order: `KAFKA_BOOTSTRAP_SERVERS` when it answers (what `make test` sets after starting a broker once for
every xdist worker); else testcontainers' `KafkaContainer` (Confluent's cp-kafka 7.9, Apache Kafka 3.9,
in KRaft mode) when a Docker engine answers; else the project's own broker script (`streams.broker`,
the same Kafka 3.9 jars from Maven Central on 127.0.0.1). No test is skipped for lack of Docker. The
choice is logged and shown in pytest's header; `python -m tests.integration.brokers` prints it for the
Makefile.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from streams.broker import answers

log = logging.getLogger("riskguard.tests.broker")

# Confluent Platform 7.9.x ships Apache Kafka 3.9; testcontainers' KafkaContainer drives Confluent's images.
KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.1"
# The project's broker script's settings that the tests rely on (streams/broker.py `_write_properties`).
CONTAINER_ENV = {
    "KAFKA_NUM_PARTITIONS": "4",
    "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "4",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "4",
    "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "true",
    "KAFKA_MESSAGE_MAX_BYTES": "4194304",
    "KAFKA_REPLICA_FETCH_MAX_BYTES": "4194304",
}

Kind = Literal["given", "testcontainers", "script"]
# A Docker probe: (the engine answers, what it said or why not).
Probe = Callable[[], tuple[bool, str]]


@dataclass(frozen=True)
class Choice:
    kind: Kind
    reason: str


def docker_engine() -> tuple[bool, str]:
    """Whether a Docker engine answers (DOCKER_HOST or the default socket), with its version or the error."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            version = client.version()
        finally:
            client.close()
    except Exception as exc:  # any failure to reach an engine means "no engine": the script broker runs instead
        return False, f"{type(exc).__name__}: {str(exc)[:160]}"
    return True, f"Docker {version.get('Version', '?')}"


def given_answers(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].partition(":")
    return answers(host, int(port or 9092))


def choose(given: str | None, reachable: Callable[[str], bool] = given_answers, probe: Probe = docker_engine) -> Choice:
    """The broker the tests will use, and why; logged."""
    if given and reachable(given):
        choice = Choice("given", f"KAFKA_BOOTSTRAP_SERVERS={given} answers")
    else:
        engine, detail = probe()
        if engine:
            reason = f"a Docker engine answers ({detail}): KafkaContainer {KAFKA_IMAGE}, KRaft"
            choice = Choice("testcontainers", reason)
        else:
            choice = Choice("script", f"no Docker engine answers ({detail}): the project's broker script")
    log.info("kafka broker for the tests: %s (%s)", choice.kind, choice.reason)
    return choice


@contextmanager
def container_broker() -> Iterator[str]:
    """A KRaft Kafka 3.9 in a container for the session; its bootstrap address."""
    from testcontainers.community.kafka import KafkaContainer

    container = KafkaContainer(KAFKA_IMAGE).with_kraft()
    for name, value in CONTAINER_ENV.items():
        container.with_env(name, value)
    container.start(timeout=180)
    try:
        yield container.get_bootstrap_server()
    finally:
        container.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    sys.stdout.write(choose(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")).kind + "\n")
