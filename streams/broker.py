"""The local, real Kafka broker (SPEC §1): fetch 3.9.x jars with Maven, format KRaft storage, start on
127.0.0.1, wait until it accepts connections, stop only the process this module started.

State lives under `.cache/kafka/` (jars, data, logs, pid); nothing there is committed.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
POM = PROJECT / "deploy" / "kafka" / "pom.xml"
LOG4J = PROJECT / "deploy" / "kafka" / "log4j.properties"


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or stopped."""


@dataclass(frozen=True)
class Broker:
    """Where one local broker keeps its files, and the ports it listens on."""

    root: Path = PROJECT / ".cache" / "kafka"
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093

    @property
    def libs(self) -> Path:
        return self.root / "libs"

    @property
    def data(self) -> Path:
        return self.root / f"data-{self.port}"

    @property
    def logs(self) -> Path:
        return self.root / f"logs-{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.root / f"broker-{self.port}.pid"

    @property
    def properties(self) -> Path:
        return self.root / f"server-{self.port}.properties"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_jars(broker: Broker) -> Path:
    """Download Kafka and its runtime dependencies with Maven into the cache (once)."""
    if any(broker.libs.glob("kafka_2.13-3.9.*.jar")):
        return broker.libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is needed to fetch the Kafka broker jars; install it and retry")
    broker.libs.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={broker.libs}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not any(broker.libs.glob("kafka_2.13-3.9.*.jar")):
        raise BrokerError(f"fetching the Kafka jars failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return broker.libs


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError("a Java runtime (java, 17+) is needed to run the local Kafka broker")
    return java


def _write_properties(broker: Broker) -> None:
    broker.root.mkdir(parents=True, exist_ok=True)
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{broker.host}:{broker.controller_port}",
        f"listeners=PLAINTEXT://{broker.host}:{broker.port},CONTROLLER://{broker.host}:{broker.controller_port}",
        f"advertised.listeners=PLAINTEXT://{broker.host}:{broker.port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={broker.data}",
        "num.partitions=4",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        "log.retention.hours=24",
        # Oversized messages (> 1 MiB) must reach the guard so it can dead-letter them (SPEC §8).
        "message.max.bytes=4194304",
        "replica.fetch.max.bytes=4194304",
    ]
    broker.properties.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _classpath(broker: Broker) -> str:
    return str(broker.libs / "*")


def _format(broker: Broker) -> None:
    if (broker.data / "meta.properties").exists():
        return
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [
            _java(),
            "-cp",
            _classpath(broker),
            f"-Dlog4j.configuration=file:{LOG4J}",
            f"-Dkafka.logs.dir={broker.logs}",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"riskguard-{broker.port}")).replace("-", "")[:22],
            "-c",
            str(broker.properties),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BrokerError(f"formatting KRaft storage failed:\n{result.stdout}{result.stderr}")


def _cluster_id(broker: Broker) -> str:
    """A stable KRaft cluster id (base64url of a UUID, as `kafka-storage random-uuid` prints)."""
    raw = uuid.uuid5(uuid.NAMESPACE_URL, f"riskguard-{broker.port}").bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _our_pid(broker: Broker) -> int | None:
    try:
        pid = int(broker.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return pid if "kafka.Kafka" in cmdline and str(broker.properties) in cmdline else None


def status(broker: Broker) -> str:
    """'running (pid N)', 'running (not started by riskguard)' or 'stopped'."""
    pid = _our_pid(broker)
    if pid is not None and answers(broker.host, broker.port):
        return f"running (pid {pid}) on {broker.bootstrap}"
    if answers(broker.host, broker.port):
        return f"a broker not started by riskguard answers on {broker.bootstrap}"
    return "stopped"


def up(broker: Broker, timeout: float = 90.0) -> str:
    """Start the broker unless one answers already; return once it accepts connections."""
    if answers(broker.host, broker.port):
        return f"already answering on {broker.bootstrap}"
    fetch_jars(broker)
    _write_properties(broker)
    _format(broker)
    broker.logs.mkdir(parents=True, exist_ok=True)
    heap = os.environ.get("RISKGUARD_KAFKA_HEAP", "768m")
    with (broker.logs / "stdout.log").open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                _java(),
                f"-Xmx{heap}",
                f"-Xms{heap}",
                "-XX:+UseG1GC",
                "-cp",
                _classpath(broker),
                f"-Dlog4j.configuration=file:{LOG4J}",
                f"-Dkafka.logs.dir={broker.logs}",
                "kafka.Kafka",
                str(broker.properties),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    broker.pid_file.write_text(str(process.pid), encoding="utf-8")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (broker.logs / "stdout.log").read_text(errors="replace")[-3000:]
            raise BrokerError(f"the broker exited with code {process.returncode}:\n{tail}")
        if answers(broker.host, broker.port) and _started(broker):
            return f"started (pid {process.pid}) on {broker.bootstrap}"
        time.sleep(0.25)
    down(broker)
    raise BrokerError(f"the broker did not accept connections within {timeout:.0f} s")


def _started(broker: Broker) -> bool:
    log = broker.logs / "server.log"
    try:
        return "Kafka Server started" in log.read_text(errors="replace")
    except OSError:
        return False


def down(broker: Broker, timeout: float = 30.0) -> str:
    """Stop the broker this module started (SIGTERM, then SIGKILL); leave any other alone."""
    pid = _our_pid(broker)
    if pid is None:
        broker.pid_file.unlink(missing_ok=True)
        return "no broker started by riskguard is running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        if _zombie(pid):
            break
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists() and not _zombie(pid):
        os.kill(pid, signal.SIGKILL)
    broker.pid_file.unlink(missing_ok=True)
    return f"stopped (pid {pid})"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return True
