"""Integration fixtures: a real Kafka broker (testcontainers or the project's script: brokers.py) and real workers."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.broker import Broker, down, up
from tests.integration.brokers import choose, container_broker

ROOT = Path(__file__).resolve().parents[2]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free port below the kernel's ephemeral range.

    A port the kernel hands out for `bind(0)` is an ephemeral one: between this probe and the server's
    own bind, any outgoing connection on the machine (the test broker's clients make many) may take it.
    Ports below the range are never given to outgoing connections, so only another server can race us.
    """
    high = min(_ephemeral_low(), 32768)
    for _ in range(200):
        port = 20000 + secrets.randbelow(high - 20000 - 1)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on 127.0.0.1 below the ephemeral range")


def free_port_pair() -> int:
    """A port whose next one is free too (a broker and its controller), both below the ephemeral range."""
    for _ in range(200):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair on 127.0.0.1 below the ephemeral range")


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """A bootstrap address: KAFKA_BOOTSTRAP_SERVERS when it answers, else a broker started here (brokers.py)."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    choice = choose(given)
    if choice.kind == "given" and given:
        yield given
        return
    if choice.kind == "testcontainers":
        with container_broker() as bootstrap:
            yield bootstrap
        return
    port = free_port_pair()
    broker = Broker(port=port, controller_port=port + 1)
    up(broker, timeout=120)
    try:
        yield broker.bootstrap
    finally:
        down(broker)


@dataclass
class Deployment:
    """One isolated riskguard deployment on the shared broker: its own topic prefix and app id."""

    bootstrap: str
    config: Path
    app_id: str
    workdir: Path
    ports: dict[str, int] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "RISKGUARD_APP_ID": self.app_id,
            "RISKGUARD_DATADIR": str(self.workdir / "state"),
        }

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", *args, "--config", str(self.config)],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start_worker(self, name: str, store: str = "rocksdb://") -> subprocess.Popen[bytes]:
        port = self.ports.get(name) or free_port()  # a restart keeps its port: one static member
        self.ports[name] = port
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.cli",
                "worker",
                "--config",
                str(self.config),
                "--store",
                store,
                "--web-port",
                str(port),
                "--datadir",
                str(self.workdir / f"state-{name}"),
            ],
            cwd=ROOT,
            env={**self.env(), "RISKGUARD_INSTANCE_ID": name},  # static membership: one stable id per worker
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError((self.workdir / f"{name}.log").read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
                    if reply.status == 200:
                        time.sleep(3)  # let the consumer group settle its first assignment
                        return process
            except OSError:
                time.sleep(0.3)
        process.kill()
        raise RuntimeError("the worker did not come up within 90 s")


def delete_topics(bootstrap: str, prefixes: tuple[str, ...]) -> int:
    """Delete a test's topics (its prefix and its app's changelogs), so a long-lived local broker stays small."""

    async def run() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if t.startswith(prefixes)]
            if names:
                await admin.delete_topics(names)
            return len(names)
        finally:
            await admin.close()

    try:
        return asyncio.run(asyncio.wait_for(run(), 60))
    except Exception:  # cleanup only: a broker the test stopped or broke has nothing to clean
        return 0


@pytest.fixture
def deployment(kafka: str, tmp_path: Path) -> Iterator[Deployment]:
    tag = uuid.uuid4().hex[:8]
    config = tmp_path / "riskguard.yaml"
    config.write_text(f"kafka: {{topic_prefix: 't{tag}.', partitions: 4}}\n", encoding="utf-8")
    yield Deployment(kafka, config, f"rg-test-{tag}", tmp_path)
    if os.environ.get("RISKGUARD_TEST_KEEP_TOPICS") != "1":  # 1: keep them for a post-mortem
        delete_topics(kafka, (f"t{tag}.", f"rg-test-{tag}"))


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
