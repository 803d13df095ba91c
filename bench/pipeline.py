"""Pipeline throughput through the real broker, beside a bare aiokafka passthrough on the same events.

`pipeline_events_per_s`: one `riskguard worker` (subprocess, RocksDB tables); the clock runs from the
first message produced until the worker's consumer group has committed every input and internal topic
to its end and every decision the replay of the same tape makes has been consumed.
`passthrough_events_per_s`: the same messages, produced the same way, through a bare aiokafka
consume -> orjson parse -> produce loop in this process (the Python limit of one worker).

Usage: python bench/pipeline.py [--symbols 100] [--accounts 20] [--days 1] [--bootstrap 127.0.0.1:19092]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from schemas.config import load_config
from streams.gen import GenParams, write_tape
from streams.kafka_io import _envelope, _partitions, ensure_topics, wait_drained
from streams.topology import Topics

ROOT = Path(__file__).resolve().parents[1]


def tape_path(symbols: int, accounts: int, days: int, seed: int, config: Any) -> Path:
    """The `riskguard gen` tape of that size under out/bench, generated on first use."""
    tape = ROOT / "out/bench" / f"gen-{symbols}x{accounts}x{days}-{seed}.jsonl"
    tape.parent.mkdir(parents=True, exist_ok=True)
    if not tape.exists():
        partial = tape.with_suffix(".tmp")
        with partial.open("wb") as sink:
            write_tape(GenParams(symbols=symbols, accounts=accounts, days=days, seed=seed), sink, config)
        partial.rename(tape)  # an interrupted run leaves no truncated tape behind
    return tape


def tape_lines(symbols: int, accounts: int, days: int, seed: int, config: Any) -> list[bytes]:
    tape = tape_path(symbols, accounts, days, seed, config)
    return [line for line in tape.read_bytes().splitlines() if line.strip()]


async def produce(lines: list[bytes], topics: Topics, bootstrap: str) -> float:
    """Produce every line to its input topic as fast as the producer takes it; returns the start time."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", enable_idempotence=True)
    await producer.start()
    started = time.monotonic()
    try:
        for raw in lines:
            logical, key, value = _envelope(raw)
            await producer.send(topics.name(logical), value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
    return started


async def count_until(bootstrap: str, topic: str, wanted: int, limit_s: float) -> tuple[int, float]:
    """Consume `topic` from the beginning until `wanted` records arrived; returns (count, time of the last)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        seen, last = 0, time.monotonic()
        deadline = time.monotonic() + limit_s
        while seen < wanted and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for records in batches.values():
                seen += len(records)
                if records:
                    last = time.monotonic()
        return seen, last
    finally:
        await consumer.stop()


def start_worker(
    config_path: Path, app_id: str, bootstrap: str, workdir: Path, store: str | None = None, port: int | None = None
) -> subprocess.Popen[bytes]:
    port = port or 20000 + int(uuid.uuid4().int % 20000)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "RISKGUARD_APP_ID": app_id}
    log = (workdir / f"{app_id}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "--config", str(config_path), "--web-port", str(port)]
        + ["--datadir", str(workdir / "state")]
        + (["--store", store] if store else []),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((workdir / f"{app_id}.log").read_text(errors="replace")[-3000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as reply:
                if reply.status == 200:
                    time.sleep(3)
                    return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("worker did not come up")


def expected_decisions(lines: list[bytes], config: Any) -> int:
    import io

    from streams.core.engine import Engine
    from streams.tape import replay

    out = io.BytesIO()
    replay(Engine(config), lines, out)
    return sum(1 for line in out.getvalue().splitlines() if line.startswith(b'{"topic":"decisions"'))


def run_pipeline(lines: list[bytes], bootstrap: str, workdir: Path, partitions: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    config_path = workdir / f"bench-{tag}.yaml"
    config_path.write_text(f"kafka: {{topic_prefix: 'b{tag}.', partitions: {partitions}}}\n", encoding="utf-8")
    config = load_config(config_path)
    topics = Topics.from_settings(config.kafka)
    app_id = f"rg-bench-{tag}"
    asyncio.run(ensure_topics(topics, bootstrap, partitions))
    worker = start_worker(config_path, app_id, bootstrap, workdir)
    if os.environ.get("BENCH_PROFILE"):  # py-spy flame data of the worker, for docs/performance.md
        subprocess.Popen(
            ["py-spy", "record", "-o", os.environ["BENCH_PROFILE"], "-f", "raw", "-d", "60", "-p", str(worker.pid)]
        )
    try:
        started = asyncio.run(produce(lines, topics, bootstrap))
        drained = asyncio.run(wait_drained(topics, bootstrap, app_id, timeout=3600, settle=0.0))
        finished = time.monotonic()
        decisions, _ = asyncio.run(count_until(bootstrap, topics.name("decisions"), 1 << 60, 3.0))
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    elapsed = finished - started
    return {
        "events": len(lines),
        "seconds": round(elapsed, 2),
        "pipeline_events_per_s": round(len(lines) / elapsed, 1),
        "drained": drained,
        "decisions_consumed": decisions,
    }


async def _passthrough(
    lines: list[bytes], bootstrap: str, partitions: int, limit_s: float = 1800, tag: str | None = None
) -> dict[str, Any]:
    tag = tag or uuid.uuid4().hex[:8]
    topics = Topics(prefix=f"p{tag}.")
    await ensure_topics(topics, bootstrap, partitions)
    sink = f"p{tag}.passthrough.out"
    inputs = [topics.name(n) for n in ("bars", "fills", "signals", "equity", "control")]
    consumer = AIOKafkaConsumer(
        *inputs, bootstrap_servers=bootstrap, group_id=f"pt-{tag}", auto_offset_reset="earliest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await consumer.start()
    await producer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        producing = asyncio.create_task(produce(lines, topics, bootstrap))
        done = 0
        deadline = time.monotonic() + limit_s
        while done < len(lines) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            for records in batches.values():
                for rec in records:
                    value = orjson.loads(rec.value)
                    await producer.send(sink, key=rec.key, value=orjson.dumps(value))
                    done += 1
        await producer.flush()
        finished = time.monotonic()
        started = await producing
    finally:
        await consumer.stop()
        await producer.stop()
    elapsed = finished - started
    return {"passthrough_events": done, "passthrough_events_per_s": round(done / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"))
    parser.add_argument("--skip-passthrough", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N lines of the tape.")
    args = parser.parse_args()
    config = load_config(None)
    lines = tape_lines(args.symbols, args.accounts, args.days, args.seed, config)[: args.limit]
    workdir = ROOT / "out/bench/pipeline"
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "tape": f"{args.symbols}x{args.accounts}x{args.days}",
        **run_pipeline(lines, args.bootstrap, workdir, args.partitions),
    }
    if not args.skip_passthrough:
        result.update(asyncio.run(_passthrough(lines, args.bootstrap, args.partitions)))
        result["pipeline_over_passthrough"] = round(
            result["pipeline_events_per_s"] / result["passthrough_events_per_s"], 4
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
