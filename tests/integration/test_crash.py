"""Crashes, rebalances, a broker hard restart, state loss and reprocessing on the real broker (SPEC §8).

Every test publishes a generated tape with `riskguard publish --ordered` (so the pipeline's sequence is
the tape's), disturbs the running pipeline, records the decisions topic with a read_committed consumer
(`riskguard record --drained APP_ID`) and asserts: no decision id missing, none twice on the topic,
none extra, and every decision identical to `riskguard replay` of the same tape.

Size and pace come from the environment, so `make test` runs a small tape and `make test-reliability`
a large one:

- RISKGUARD_CRASH_EVENTS   tape lines (default 6000; make test-reliability: 100000)
- RISKGUARD_CRASH_CYCLES   add/remove cycles of a third worker (default 2; make test-reliability: 5)
- RISKGUARD_CRASH_SESSION_TIMEOUT  the workers' Kafka session timeout in seconds (default 10): how long
  the group coordinator waits for a worker killed with -9 before it hands its partitions on. Faust reads
  it as BROKER_SESSION_TIMEOUT; its default (60 s) would only lengthen each recovery.
- RISKGUARD_CRASH_EXACTLY_ONCE  1: also run the exactly_once variants (known failures, xfail; default: only
  when RISKGUARD_CRASH_EVENTS is above 6000)
- RISKGUARD_RELIABILITY_OUT  a file the `RELIABILITY {json}` figure lines are appended to (also printed).

docs/reliability.md lists these tests with the figures of a run and the bugs they found.

Each test is bounded in time: every wait has a deadline and every child process a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from schemas.config import load_config
from streams.broker import Broker, answers, down, up
from streams.gen import GenParams, account_names, write_tape
from streams.kafka_io import wait_drained
from streams.topology import Topics
from tests.integration.conftest import ROOT, Deployment, free_port, free_port_pair
from tests.integration.test_pipeline_parity import _decisions

pytestmark = pytest.mark.integration

EVENTS = int(os.environ.get("RISKGUARD_CRASH_EVENTS", "6000"))
CYCLES = int(os.environ.get("RISKGUARD_CRASH_CYCLES", "2"))
SESSION_TIMEOUT = float(os.environ.get("RISKGUARD_CRASH_SESSION_TIMEOUT", "10"))
# The exactly_once variants cost minutes each: they run with RISKGUARD_CRASH_EXACTLY_ONCE=1, which
# `make test-reliability` sets, or whenever RISKGUARD_CRASH_EVENTS is above the default.
RUN_EXACTLY_ONCE = os.environ.get("RISKGUARD_CRASH_EXACTLY_ONCE", "1" if EVENTS > 6000 else "0") == "1"


def _guarantees(at_least_once_fails: str | None = None) -> list[Any]:
    alo: list[Any] = [pytest.mark.xfail(strict=False, reason=at_least_once_fails)] if at_least_once_fails else []
    # exactly_once was a known failure up to session 5 (Faust's transactions do not fit this topology, see
    # docs/reliability.md); since the commits come from the agents' own progress it passes like at_least_once.
    eos: list[Any] = []
    if not RUN_EXACTLY_ONCE:
        eos.append(pytest.mark.skip(reason="minutes per test; RISKGUARD_CRASH_EXACTLY_ONCE=1 runs it"))
    return [pytest.param("at_least_once", marks=alo), pytest.param("exactly_once", marks=eos)]


INPUTS = ("bars", "fills", "signals", "equity", "control")
ROUTES = {
    "state": "/accounts/{}/state",
    "budget": "/budget/{}",
    "utilization": "/budget/{}/utilization",
    "recommendations": "/budget/{}/recommendations",
}
# Generous for a busy 2-core box: published --ordered, the pipeline ran 350-500 events/s here; a restart after
# kill -9 rebuilds the tables from changelogs at about 2,000 records/s (141 s at 80 % of 100,000 events).
BUDGET = 180.0 + EVENTS / 150.0
UNCLEAN = b"unclean_stop_local_tables_dropped"


def _report(test: str, **figures: Any) -> None:
    """One `RELIABILITY {json}` line per test run, printed and appended to RISKGUARD_RELIABILITY_OUT."""
    line = "RELIABILITY " + json.dumps({"test": test, **figures}, sort_keys=True)
    print(line)
    out = os.environ.get("RISKGUARD_RELIABILITY_OUT")
    if out:
        with open(out, "a", encoding="utf-8") as sink:
            sink.write(line + "\n")


def _params(events: int) -> GenParams:
    """Generator parameters for a tape of about `events` lines (mostly bars, about 9 % account events)."""
    if events <= 20_000:
        minutes = max(10, min(390, round(events / (60 * 1.09))))
        return GenParams(symbols=60, accounts=6, days=1, session_minutes=minutes, seed=5, signal_every=3)
    minutes = max(30, min(390, round(events / (100 * 3 * 1.14))))
    return GenParams(symbols=100, accounts=20, days=3, session_minutes=minutes, seed=5, signal_every=5)


@dataclass
class Run:
    """One deployment's tape, its replayed decisions and the processes started for it."""

    deployment: Deployment
    guarantee: str = "at_least_once"
    tape: Path = field(init=False)
    lines: int = field(init=False)
    accounts: list[str] = field(init=False)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        params = _params(EVENTS)
        self.tape = self.deployment.workdir / "tape.jsonl"
        with self.tape.open("wb") as sink:
            write_tape(params, sink, load_config(self.deployment.config))
        self.lines = len(self.tape.read_bytes().splitlines())
        self.accounts = account_names(params)

    @property
    def stall(self) -> float:
        """How long any one wait may take: the publisher at a change of topic, a progress or drain wait."""
        return BUDGET

    @property
    def topics(self) -> Topics:
        return Topics.from_settings(load_config(self.deployment.config).kafka)

    def env(self) -> dict[str, str]:
        return {
            **self.deployment.env(),
            "RISKGUARD_PROCESSING_GUARANTEE": self.guarantee,
            "BROKER_SESSION_TIMEOUT": str(SESSION_TIMEOUT),
            "BROKER_HEARTBEAT_INTERVAL": str(max(1.0, SESSION_TIMEOUT / 10)),
        }

    def cli(self, *args: str, timeout: float = BUDGET) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", *args, "--config", str(self.deployment.config)],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- workers -----------------------------------------------------------------------------------

    def log(self, name: str) -> Path:
        return self.deployment.workdir / f"{name}.log"

    def datadir(self, name: str) -> Path:
        return self.deployment.workdir / f"state-{name}"

    def start(self, name: str, timeout: float = 90.0) -> float:
        """Start (or restart, with the same datadir) a worker; seconds until its web server answers."""
        began = time.monotonic()
        port = self.deployment.ports.get(name) or free_port()  # a restart keeps its port: one static member
        self.deployment.ports[name] = port
        with self.log(name).open("ab") as log:  # appended: a restart keeps what the killed one wrote
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streams.cli",
                    "worker",
                    "--config",
                    str(self.deployment.config),
                    "--store",
                    "rocksdb://",
                    "--web-port",
                    str(port),
                    "--datadir",
                    str(self.datadir(name)),
                    "--guarantee",
                    self.guarantee,
                ],
                cwd=ROOT,
                env={**self.env(), "RISKGUARD_INSTANCE_ID": name},  # static membership: the same id on restart
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.workers[name] = process
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"worker {name} exited: {self.log(name).read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
                    if reply.status == 200:
                        return time.monotonic() - began
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"worker {name} did not answer within {timeout:.0f} s")

    def kill(self, name: str) -> None:
        """kill -9: no clean-stop marker removed, nothing flushed."""
        process = self.workers.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def terminate(self, name: str, timeout: float = 60.0) -> int:
        """kill -TERM and wait for the clean stop; returns the exit code."""
        process = self.workers.pop(name)
        process.terminate()
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"worker {name} did not stop within {timeout:.0f} s of SIGTERM") from None

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.workers.values())

    def close(self) -> None:
        for name in list(self.workers):
            with contextlib.suppress(AssertionError):
                self.terminate(name, timeout=30)
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait()

    # -- tape in, decisions out --------------------------------------------------------------------

    def publish(self, tape: Path | None = None, rate: float | None = None) -> subprocess.Popen[bytes]:
        """`riskguard publish --ordered` in the background (its output goes to publish.log)."""
        args = [sys.executable, "-m", "streams.cli", "publish", str(tape or self.tape), "--ordered"]
        args += ["--config", str(self.deployment.config), "--timeout", f"{self.stall:.0f}"]  # waits out recoveries
        if rate:
            args += ["--rate", f"{rate:.1f}"]
        with (self.deployment.workdir / "publish.log").open("ab") as log:
            process = subprocess.Popen(args, cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        self.children.append(process)
        return process

    def finish(self, publisher: subprocess.Popen[bytes], timeout: float | None = None) -> None:
        timeout = timeout or 3 * self.stall
        try:
            code = publisher.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            publisher.kill()
            raise AssertionError(f"publish did not finish within {timeout:.0f} s") from None
        text = (self.deployment.workdir / "publish.log").read_text(errors="replace")
        assert code == 0, text[-3000:]

    def replayed(self, tape: Path | None = None) -> dict[str, Any]:
        out = self.deployment.workdir / "replayed.jsonl"
        result = self.cli("replay", str(tape or self.tape), "--out", str(out))
        assert result.returncode == 0, result.stderr
        decisions, duplicates = _decisions(out)
        assert duplicates == 0
        assert len(decisions) > 50
        return decisions

    def recorded(self, name: str = "recorded") -> tuple[dict[str, Any], int, int]:
        """Decisions on the topic (read_committed, after the app drained): by id, duplicates, records."""
        out = self.deployment.workdir / f"{name}.jsonl"
        args = ["record", "--topics", "decisions", "--out", str(out), "--idle", "4"]
        result = self.cli(*args, "--drained", self.deployment.app_id, timeout=BUDGET + 240)
        assert result.returncode == 0, result.stderr
        assert "did not catch up" not in result.stderr, result.stderr
        decisions, duplicates = _decisions(out)
        return decisions, duplicates, len(out.read_bytes().splitlines())

    # -- progress, state ---------------------------------------------------------------------------

    def consumed(self, at_least: int, timeout: float, publisher: subprocess.Popen[bytes] | None = None) -> int:
        """Wait until the app's group has committed `at_least` input messages; return the count."""
        return asyncio.run(self._consumed(at_least, timeout, publisher))

    async def _consumed(self, at_least: int, timeout: float, publisher: subprocess.Popen[bytes] | None) -> int:
        names = {self.topics.name(t) for t in INPUTS}
        admin = AIOKafkaAdminClient(bootstrap_servers=self.deployment.bootstrap)
        await admin.start()
        deadline = time.monotonic() + timeout
        count = 0
        try:
            while time.monotonic() < deadline:
                try:  # bars are the market agent's (the app's group), the other inputs the sequencer's group
                    offsets = {
                        **await admin.list_consumer_group_offsets(self.deployment.app_id),
                        **await admin.list_consumer_group_offsets(self.deployment.app_id + "-sequencer"),
                    }
                except Exception:  # the coordinator moves during rebalances and restarts
                    offsets = {}
                count = max(count, sum(m.offset for tp, m in offsets.items() if tp.topic in names and m.offset > 0))
                if count >= at_least:
                    return count
                if publisher is not None and publisher.poll() not in (None, 0):
                    raise AssertionError(f"publish failed with {publisher.returncode} at {count} consumed")
                await asyncio.sleep(0.1)
        finally:
            await admin.close()
        raise AssertionError(f"only {count} of {at_least} input messages consumed within {timeout:.0f} s")

    def drained(self, timeout: float | None = None) -> None:
        timeout = timeout or self.stall
        assert asyncio.run(wait_drained(self.topics, self.deployment.bootstrap, self.deployment.app_id, timeout))

    def views(self, name: str) -> dict[str, Any]:
        """Every view of every account, as the one running worker `name` serves them."""
        port = self.deployment.ports[name]
        served: dict[str, Any] = {}
        for account in self.accounts:
            for view, route in ROUTES.items():
                url = f"http://127.0.0.1:{port}{route.format(account)}"
                try:
                    with urllib.request.urlopen(url, timeout=10) as reply:
                        served[f"{account}/{view}"] = json.loads(reply.read())
                except urllib.error.HTTPError as exc:
                    served[f"{account}/{view}"] = {"status": exc.code, "body": json.loads(exc.read())}
        return served

    def skipped(self, name: str) -> dict[str, int]:
        """The worker's riskguard_duplicates counter by level: redelivered or duplicate events it ignored."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.deployment.ports[name]}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        counts: dict[str, int] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "riskguard_duplicates_total":
                    counts[sample.labels["level"]] = int(sample.value)
        return counts

    def replayed_views(self, tape: Path) -> dict[str, Any]:
        """The same views from `riskguard replay`'s engine after `tape` (what `riskguard state` prints)."""
        from streams.core.engine import Engine
        from streams.tape import replay
        from streams.views import VIEWS
        from streams.worker.settings import control_key

        engine = Engine(load_config(self.deployment.config), control_key=control_key())
        with tape.open("rb") as source:
            replay(engine, source, io.BytesIO())
        return {
            f"{account}/{view}": orjson.loads(orjson.dumps(VIEWS[view](engine, account)))
            for account in self.accounts
            for view in ROUTES
        }

    def poison_pill(self) -> None:
        """A bar that is not JSON: dead-lettered by the sequencer, no state touched.

        Faust consumes nothing before every table has recovered, so once it is committed
        (`drained`) the tables of a restarted worker are complete.
        """

        async def send() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.deployment.bootstrap)
            await producer.start()
            try:
                await producer.send_and_wait(self.topics.name("bars"), b"{not json", key=b"PILL")
            finally:
                await producer.stop()

        asyncio.run(send())

    def reset_to_earliest(self) -> int:
        """Commit the earliest offset of every topic the (empty) group has offsets for; returns how many."""
        return asyncio.run(self._reset())

    async def _reset(self) -> int:
        total = 0
        for group in (self.deployment.app_id, self.deployment.app_id + "-sequencer"):  # the levels', the sequencer's
            total += await self._reset_group(group)
        return total

    async def _reset_group(self, group: str) -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.deployment.bootstrap)
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        parts = sorted(committed)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.deployment.bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(parts)
            earliest = await consumer.beginning_offsets(parts)
            deadline = time.monotonic() + 60
            while True:
                try:
                    await consumer.commit({tp: earliest[tp] for tp in parts})
                    break
                except Exception:  # the group may still hold the stopped member a moment
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(1)
        finally:
            await consumer.stop()
        return len(parts)


def _compare(expected: dict[str, Any], got: dict[str, Any]) -> dict[str, int]:
    return {
        "missing": len(expected.keys() - got.keys()),
        "extra": len(got.keys() - expected.keys()),
        "mismatched": sum(1 for k in expected.keys() & got.keys() if got[k] != expected[k]),
    }


def _assert_as_replay(expected: dict[str, Any], got: dict[str, Any], diff: dict[str, int], duplicates: int) -> None:
    """Every decision of the replay recorded once, with the same contents; none other."""
    assert diff == {"missing": 0, "extra": 0, "mismatched": 0}, _first_difference(expected, got)
    assert duplicates == 0


def _first_difference(expected: dict[str, Any], got: dict[str, Any]) -> str:
    for key in sorted(expected.keys() | got.keys()):
        if expected.get(key) != got.get(key):
            return f"{key}: expected {expected.get(key)!r}\n got {got.get(key)!r}"
    return ""


@pytest.fixture
def run(deployment: Deployment) -> Iterator[Callable[[str], Run]]:
    made: list[Run] = []

    def make(guarantee: str = "at_least_once") -> Run:
        made.append(Run(deployment, guarantee))
        return made[-1]

    try:
        yield make
    finally:
        for each in made:
            each.close()


# -- 1. kill -9 at 20 %, 50 % and 80 % -------------------------------------------------------------


@pytest.mark.parametrize("guarantee", _guarantees())
def test_worker_killed_9_at_20_50_80_percent_when_restarted_then_no_decision_missing_or_twice_and_all_as_replay(
    run: Callable[[str], Run], guarantee: str
) -> None:
    r = run(guarantee)
    expected = r.replayed()
    began = time.monotonic()
    r.start("w1")
    publisher = r.publish()
    kills: list[dict[str, float]] = []
    for fraction in (0.2, 0.5, 0.8):
        at = r.consumed(int(fraction * r.lines), r.stall, publisher)
        r.kill("w1")
        killed = time.monotonic()
        restart = r.start("w1")
        r.consumed(min(at + 1, r.lines), r.stall, publisher)  # consumes again (unless the sequencer had it all)
        kills.append({"at": round(at / r.lines, 3), "restart_s": round(restart, 1)})
        kills[-1]["recovery_s"] = round(time.monotonic() - killed, 1)
    r.finish(publisher)
    got, duplicates, records = r.recorded()
    elapsed = time.monotonic() - began
    unclean = r.log("w1").read_bytes().count(UNCLEAN)
    diff = _compare(expected, got)
    _report(
        "kill9",
        guarantee=guarantee,
        events=r.lines,
        decisions=len(expected),
        records=records,
        kills=len(kills),
        restarts=len(kills),
        unclean_restarts=unclean,
        duplicates=duplicates,
        recovery_s=[k["recovery_s"] for k in kills],
        killed_at=[k["at"] for k in kills],
        seconds=round(elapsed, 1),
        **diff,
    )
    assert unclean == 3  # every restart took the unclean-stop path: local tables dropped, changelogs replayed
    _assert_as_replay(expected, got, diff, duplicates)


# -- 2. a third worker joins and leaves while the tape flows ---------------------------------------


@pytest.mark.parametrize("guarantee", _guarantees())
def test_third_worker_when_added_and_terminated_repeatedly_mid_tape_then_no_decision_missing_or_twice(
    run: Callable[[str], Run], guarantee: str
) -> None:
    r = run(guarantee)
    expected = r.replayed()
    began = time.monotonic()
    r.start("w1")
    r.start("w2")
    rate = r.lines / (CYCLES * 20.0 + 10.0)  # the tape lasts about 20 s per cycle
    publisher = r.publish(rate=rate)
    steps = 2 * CYCLES + 1
    resumed: list[float] = []
    exit_codes: list[int] = []
    for cycle in range(CYCLES):
        r.consumed(int(r.lines * (2 * cycle + 1) / steps), r.stall, publisher)
        joined = time.monotonic()
        r.start("w3")  # same datadir each time: a clean restart on local tables that are behind
        at = r.consumed(0, 10)
        r.consumed(min(at + 1, r.lines), r.stall, publisher)
        resumed.append(round(time.monotonic() - joined, 1))
        r.consumed(int(r.lines * (2 * cycle + 2) / steps), r.stall, publisher)
        left = time.monotonic()
        exit_codes.append(r.terminate("w3"))
        at = r.consumed(0, 10)
        if at < r.lines:
            r.consumed(min(at + 1, r.lines), r.stall, publisher)
        resumed.append(round(time.monotonic() - left, 1))
    r.finish(publisher)
    alive = r.alive()
    got, duplicates, records = r.recorded()
    diff = _compare(expected, got)
    _report(
        "add_remove_workers",
        guarantee=guarantee,
        events=r.lines,
        decisions=len(expected),
        records=records,
        cycles=CYCLES,
        rate=round(rate),
        duplicates=duplicates,
        recovery_s=resumed,
        exit_codes=exit_codes,
        seconds=round(time.monotonic() - began, 1),
        **diff,
    )
    assert alive
    _assert_as_replay(expected, got, diff, duplicates)


# -- 3. broker kill -9 and restart mid-stream ------------------------------------------------------


@pytest.fixture
def own_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    """A broker of this test's own (never the shared one), its files under tmp_path, the jars linked."""
    shared = Broker()
    if not any(shared.libs.glob("kafka_2.13-3.9.*.jar")):
        pytest.skip("the Kafka jars are not fetched (riskguard kafka up fetches them)")
    root = tmp_path / "kafka"
    root.mkdir()
    (root / "libs").symlink_to(shared.libs, target_is_directory=True)
    port = free_port_pair()
    monkeypatch.setenv("RISKGUARD_KAFKA_HEAP", "512m")
    broker = Broker(root=root, port=port, controller_port=port + 1)
    up(broker, timeout=120)
    try:
        yield broker
    finally:
        down(broker)


def _kill_9(broker: Broker) -> int:
    pid = int(broker.pid_file.read_text().strip())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while answers(broker.host, broker.port, timeout=0.2) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # `up` ran in this process: reap the child
    return pid


def test_broker_up_when_server_log_holds_a_previous_start_then_only_a_new_start_line_counts(tmp_path: Path) -> None:
    from streams.broker import _log_size, _started

    broker = Broker(root=tmp_path, port=1, controller_port=2)
    broker.logs.mkdir(parents=True)
    log = broker.logs / "server.log"
    log.write_text("[t0] INFO [KafkaRaftServer nodeId=1] Kafka Server started (kafka.server.KafkaRaftServer)\n")
    since = _log_size(broker)  # what `up` notes before it starts the new process
    assert _started(broker) and not _started(broker, since)
    with log.open("a") as handle:
        handle.write("[t1] INFO [KafkaRaftServer nodeId=1] Kafka Server started (kafka.server.KafkaRaftServer)\n")
    assert _started(broker, since)
    log.write_text("Kafka Server started\n")  # a shorter, replaced log is read from its start
    assert _started(broker, since)


@pytest.mark.parametrize("guarantee", _guarantees())
def test_broker_killed_9_and_restarted_mid_stream_then_worker_recovers_alone_with_no_decision_lost_or_twice(
    own_broker: Broker, tmp_path: Path, guarantee: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    config = tmp_path / "riskguard.yaml"
    config.write_text(f"kafka: {{topic_prefix: 'b{tag}.', partitions: 4}}\n", encoding="utf-8")
    r = Run(Deployment(own_broker.bootstrap, config, f"rg-broker-{tag}", tmp_path), guarantee)
    try:
        expected = r.replayed()
        began = time.monotonic()
        r.start("w1")
        publisher = r.publish()
        at = r.consumed(int(0.5 * r.lines), r.stall, publisher)
        old_pid = _kill_9(own_broker)
        killed = time.monotonic()
        started = up(own_broker, timeout=120)
        broker_up = time.monotonic() - killed
        new_pid = int(own_broker.pid_file.read_text().strip())
        starts = (own_broker.logs / "server.log").read_text(errors="replace").count("Kafka Server started")
        r.consumed(min(at + 1, r.lines), r.stall, publisher)
        recovery = time.monotonic() - killed
        r.finish(publisher)
        alive = r.alive()
        got, duplicates, records = r.recorded()
    finally:
        r.close()
    diff = _compare(expected, got)
    _report(
        "broker_restart",
        guarantee=guarantee,
        events=r.lines,
        decisions=len(expected),
        records=records,
        killed_at=round(at / r.lines, 3),
        broker_restart_s=round(broker_up, 1),
        recovery_s=round(recovery, 1),
        duplicates=duplicates,
        seconds=round(time.monotonic() - began, 1),
        **diff,
    )
    assert started.startswith("started") and new_pid != old_pid
    assert starts == 2  # `up` returned only once the new process had logged its start, not on the old line
    assert alive, "the worker exited when the broker went away"
    _assert_as_replay(expected, got, diff, duplicates)


# -- 4. state loss: the local RocksDB directory deleted --------------------------------------------


def test_rocksdb_datadir_when_deleted_after_clean_stop_then_tables_rebuilt_from_changelogs_with_equal_views(
    run: Callable[[str], Run],
) -> None:
    r = run("at_least_once")
    expected = r.replayed()
    lines = r.tape.read_bytes().splitlines(keepends=True)
    cut = int(len(lines) * 0.6)
    first, rest = r.deployment.workdir / "first.jsonl", r.deployment.workdir / "rest.jsonl"
    first.write_bytes(b"".join(lines[:cut]))
    rest.write_bytes(b"".join(lines[cut:]))

    r.start("w1")
    r.finish(r.publish(first))
    r.drained()
    before = r.views("w1")
    assert r.terminate("w1") == 0
    assert not (r.datadir("w1") / r.deployment.app_id / "RUNNING").exists()  # a clean stop
    shutil.rmtree(r.datadir("w1"))
    restarted = time.monotonic()
    r.start("w1")
    r.poison_pill()  # consumed only once every table has recovered
    r.drained()
    recovery = time.monotonic() - restarted
    after = r.views("w1")
    r.finish(r.publish(rest))
    got, duplicates, records = r.recorded()
    final = r.views("w1")
    diff = _compare(expected, got)
    views_equal = after == before
    _report(
        "state_loss",
        events=r.lines,
        decisions=len(expected),
        records=records,
        deleted_at=round(cut / r.lines, 3),
        views=len(before),
        views_equal=views_equal,
        recovery_s=round(recovery, 1),
        duplicates=duplicates,
        **diff,
    )
    assert all("status" not in v for v in before.values()), before
    assert before == r.replayed_views(first)
    assert views_equal, _first_difference(before, after)
    assert final == r.replayed_views(r.tape), _first_difference(r.replayed_views(r.tape), final)
    _assert_as_replay(expected, got, diff, duplicates)


# -- 5. reprocessing from the earliest offsets -----------------------------------------------------


def test_group_offsets_when_reset_to_earliest_then_nothing_applied_twice_and_no_new_decision(
    run: Callable[[str], Run],
) -> None:
    r = run("at_least_once")
    expected = r.replayed()
    r.start("w1")
    r.finish(r.publish())
    first, first_duplicates, first_records = r.recorded("first")
    before = r.views("w1")
    assert r.terminate("w1") == 0
    reset = r.reset_to_earliest()
    restarted = time.monotonic()
    r.start("w1")
    r.drained()  # every input and internal log read again from offset 0
    recovery = time.monotonic() - restarted
    after = r.views("w1")
    skipped = r.skipped("w1")
    got, duplicates, records = r.recorded("again")
    diff = _compare(first, got)
    views_equal = after == before
    _report(
        "reprocessing",
        events=r.lines,
        decisions=len(expected),
        records=records,
        reset_partitions=reset,
        skipped=skipped,
        views=len(before),
        views_equal=views_equal,
        recovery_s=round(recovery, 1),
        duplicates=duplicates,
        **diff,
    )
    assert _compare(expected, first) == {"missing": 0, "extra": 0, "mismatched": 0}
    assert first_duplicates == 0
    assert before == r.replayed_views(r.tape)
    assert sum(skipped.values()) > 0  # the logs were read again, and what was applied already ignored
    assert views_equal, _first_difference(before, after)
    assert diff == {"missing": 0, "extra": 0, "mismatched": 0}, _first_difference(first, got)
    assert duplicates == 0 and records == first_records
