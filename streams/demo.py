"""`riskguard demo` (`make run`): broker, worker, a session published in order, decisions shown live.

Starts the local broker unless KAFKA_BOOTSTRAP_SERVERS answers, starts one worker, and plays a
generated session live: its bars are published as the market feed while the example execution
service (`examples/execution_service.py`, on `streams.client`) trades the session's signals through
the guard, filling what it allows with the decision's id and marking equity. The real S&P 500 daily
bars of ../shared/data (`--data`) have no signals and are published as they are, in order. Every
decision and halt is printed as the worker publishes it; on the end or Ctrl-C it stops what it started.
"""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from schemas.config import Config
from schemas.outputs import Decision, Halt, RiskEvent
from streams.broker import Broker, answers, down, up
from streams.core.engine import Output
from streams.kafka_io import publish, wait_drained
from streams.topology import Topics


def sp500_tape(csv_path: Path, accounts: int = 3, book: float = 1_000_000.0) -> Iterator[bytes]:
    """Daily bars of the real data, equal-weight books bought at the first close, equity at each close."""
    days: dict[str, dict[str, dict[str, float]]] = {}
    with csv_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            days.setdefault(row["date"], {})[row["symbol"]] = {
                k: float(row[k]) for k in ("open", "high", "low", "close")
            }
    names = [f"EW{n}" for n in range(accounts)]
    shares: dict[str, dict[str, float]] = {}
    first = min(days)
    for date in sorted(days):
        bars = days[date]
        ts = f"{date}T21:00:00Z"
        for symbol in sorted(bars):
            b = bars[symbol]
            value = {
                "symbol": symbol,
                "ts": ts,
                "open": b["open"],
                "close": b["close"],
                "high": max(b["high"], b["open"], b["close"]),
                "low": min(b["low"], b["open"], b["close"]),
            }
            yield orjson.dumps({"topic": "bars", "key": symbol, "value": value})
        for n, account in enumerate(names):
            held = shares.setdefault(account, {})
            if date == first:
                yield orjson.dumps(
                    {"topic": "equity", "key": account, "value": {"account": account, "ts": ts, "equity": book}}
                )
                universe = sorted(bars)[n::accounts]
                for symbol in universe:
                    qty = round(book / len(universe) / bars[symbol]["close"], 4)
                    held[symbol] = qty
                    fill = {
                        "fill_id": f"{account}-{symbol}",
                        "account": account,
                        "symbol": symbol,
                        "side": "BUY",
                        "qty": qty,
                        "price": bars[symbol]["close"],
                        "ts": ts,
                    }
                    yield orjson.dumps({"topic": "fills", "key": account, "value": fill})
            equity = sum(q * bars[s]["close"] for s, q in held.items() if s in bars)
            value = {"account": account, "ts": f"{date}T21:00:01Z", "equity": round(equity, 2)}
            yield orjson.dumps({"topic": "equity", "key": account, "value": value})


async def watch(
    topics: Topics, bootstrap: str, show: Callable[[Output], None], stop: asyncio.Event, idle: float
) -> int:
    """Print decisions, halts and warnings as they arrive until `stop` is set and `idle` s pass quietly."""
    consumer = AIOKafkaConsumer(
        topics.name("decisions"),
        topics.name("halts"),
        topics.name("events"),
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    models = {topics.name("decisions"): Decision, topics.name("halts"): Halt, topics.name("events"): RiskEvent}
    await consumer.start()
    seen = 0
    last = time.monotonic()
    try:
        while not (stop.is_set() and time.monotonic() - last > idle):
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for rec in records:
                    value: Any = models[tp.topic].model_validate(orjson.loads(rec.value))
                    show(Output(tp.topic, None, value))
                    seen += 1
                    last = time.monotonic()
    finally:
        await consumer.stop()
    return seen


EXECUTION_SERVICE = Path(__file__).resolve().parents[1] / "examples" / "execution_service.py"
BAR_TIME_S = 0.25
"""Wall-clock seconds per bar time of the demo's market feed (the generated session: 360 bar times, 90 s).

The demo compresses time, but an execution round trip (decision -> service -> fill back at the guard)
must stay well inside `pending_ttl` of event time (5 min = 1.25 s here): faster, the guard expires a
pending exit before its fill arrives and decides it again, and the late fills overshoot the position."""
SERVICE_LIMIT_S = 600.0


@dataclass(frozen=True)
class Session:
    """A demo tape split the way the demo plays it: market data, strategy signals, opening equity."""

    bars: list[bytes]
    signals: list[bytes]
    equity: float
    bar_times: int

    @property
    def bar_rate(self) -> float:
        """Bars per second that play one bar time every `BAR_TIME_S`."""
        return len(self.bars) / max(self.bar_times, 1) / BAR_TIME_S


def split_session(tape: list[bytes]) -> Session | None:
    """The tape as a market feed and a strategy's signals (its fills and equity marks are left out: the example
    execution service makes its own from the guard's decisions); None when the tape has no signals."""
    bars: list[bytes] = []
    signals: list[bytes] = []
    equity = 0.0
    times: set[Any] = set()
    for line in tape:
        envelope = orjson.loads(line)
        if envelope["topic"] == "bars":
            bars.append(line)
            times.add(envelope["value"]["ts"])
        elif envelope["topic"] == "signals":
            signals.append(orjson.dumps(envelope["value"]))
        elif envelope["topic"] == "equity" and not equity:
            equity = float(envelope["value"]["equity"])
    if not signals:
        return None
    return Session(bars, signals, equity or 1_000_000.0, len(times))


def start_service(
    session: Session, demo_config: Path, workdir: Path, env: dict[str, str]
) -> subprocess.Popen[bytes] | None:
    """The example execution service (examples/execution_service.py) on the session's signals; None without it."""
    if not EXECUTION_SERVICE.is_file():
        return None
    signals = workdir / "signals.jsonl"
    signals.write_bytes(b"\n".join(session.signals) + b"\n")
    argv = [sys.executable, str(EXECUTION_SERVICE), "--signals", str(signals), "--config", str(demo_config)]
    argv += ["--equity", str(session.equity), "--quiet-halts"]
    return subprocess.Popen(argv, env={**env, "PYTHONUNBUFFERED": "1"})  # noqa: S603 - our own example


def run_demo(
    config: Config,
    config_path: Path | None,
    tape: list[bytes],
    show: Callable[[Output], None],
    say: Callable[[str], None],
) -> None:
    """Run the whole demo; everything it starts is stopped on the way out.

    A tape with signals is played live: the demo publishes its bars as the market feed and the example
    execution service trades its signals through the guard (`streams.client`), filling each allowed
    decision at its price with its `decision_id` and marking equity, so the fills follow the guard's
    decisions as they are made. A tape without signals (the S&P 500 books) is published as it is, in order.
    """
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    host, _, port = bootstrap.partition(":")
    broker: Broker | None = None
    if not answers(host, int(port or 9092)):
        broker = Broker(port=int(port or 9092), controller_port=int(port or 9092) + 1)
        say(f"kafka: {up(broker)}")
    tag = time.strftime("%Y%m%d%H%M%S")
    prefix = f"demo{tag}."
    workdir = Path("out/demo")
    workdir.mkdir(parents=True, exist_ok=True)
    demo_config = workdir / "pipeline.yaml"
    base = Path(config_path).read_text(encoding="utf-8") if config_path else ""
    demo_config.write_text(base + f"\nkafka: {{topic_prefix: '{prefix}', partitions: 4}}\n", encoding="utf-8")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RISKGUARD_APP_ID": f"riskguard-demo-{tag}",
        "RISKGUARD_WEB_PORT": os.environ.get("RISKGUARD_WEB_PORT", "6066"),
    }
    services: list[subprocess.Popen[bytes]] = []
    log = (workdir / "worker.log").open("wb")
    worker = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "streams.cli", "worker", "--config", str(demo_config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(worker, int(env["RISKGUARD_WEB_PORT"]))
        web = f"http://127.0.0.1:{env['RISKGUARD_WEB_PORT']}/health"
        session = split_session(tape)
        playing = f"{len(session.bars)} bars live" if session is not None else f"{len(tape)} events in order"
        say(f"worker up (pid {worker.pid}, {web}); publishing {playing}")
        topics = Topics(prefix)

        async def main() -> int:
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch(topics, bootstrap, show, stop, idle=5.0))
            service = start_service(session, demo_config, workdir, env) if session is not None else None
            if service is not None:
                services.append(service)  # stopped on the way out whatever happens
            if session is None or service is None:
                counts = await publish(tape, topics, bootstrap, ordered=True)
            else:
                say(f"execution service up (pid {service.pid}): {len(session.signals)} signals to trade")
                counts = await publish(session.bars, topics, bootstrap, rate=session.bar_rate)
                await asyncio.to_thread(_wait_service, service, say)
            say("published " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
            await wait_drained(topics, bootstrap, env["RISKGUARD_APP_ID"], timeout=600)
            stop.set()
            return await watcher

        seen = asyncio.run(main())
        say(f"done: {seen} decisions, halts and warnings from the pipeline (worker log: {workdir / 'worker.log'})")
    except KeyboardInterrupt:
        say("interrupted: stopping what the demo started")
    finally:
        for service in services:
            _stop(service)
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        if broker is not None:
            say(f"kafka: {down(broker)}")


def _wait_service(service: subprocess.Popen[bytes], say: Callable[[str], None]) -> None:
    try:
        code = service.wait(timeout=SERVICE_LIMIT_S)
    except subprocess.TimeoutExpired:
        say(f"the execution service did not finish within {SERVICE_LIMIT_S:.0f} s: stopped")
        _stop(service)
        return
    if code != 0:
        say(f"the execution service exited with {code}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_healthy(worker: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError("the worker stopped; see out/demo/worker.log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
                if reply.status == 200:
                    time.sleep(2)
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("the worker did not answer /health within 120 s")
