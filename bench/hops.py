"""Where an idle worker's decision latency goes: the time between the pipeline's Kafka hops.

One worker, one account with equity and bars for 50 symbols; then `--signals` signals, one every `--gap`
seconds (no other load). Each hop's record carries its producer's timestamp (CreateTime), so the time
from one hop to the next is visible: signal produced -> risk.sequenced -> risk.decisions -> decision consumed
here (two Kafka hops, SPEC §10).

Usage: python -m bench.hops [--signals 40] [--gap 0.2] [--bootstrap 127.0.0.1:19092]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from bench import pipeline as pl
from bench.run import DEFAULT_BOOTSTRAP, SESSION_OPEN_MS, WORK, Deployment, _envelope, _Market, kafka
from streams.kafka_io import _partitions, wait_drained

HOPS = ("sequenced", "decisions")
_ID = re.compile(rb'"(?:signal_id|source_id)":"(H[0-9]+)"')


async def measure(dep: Deployment, signals: int, gap: float) -> dict[str, Any]:
    topics = dep.topics()
    market = _Market(50, 7)
    setup = [_envelope("equity", "H1", {"account": "H1", "ts": SESSION_OPEN_MS, "equity": 1_000_000.0})]
    setup += [_envelope("bars", b["symbol"], b) for b in market.bars(SESSION_OPEN_MS)]
    await pl.produce(setup, topics, dep.bootstrap)
    await wait_drained(topics, dep.bootstrap, dep.app_id, timeout=60, settle=0.5)
    names = {topics.name(hop): hop for hop in HOPS}
    consumer = AIOKafkaConsumer(bootstrap_servers=dep.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    parts = [TopicPartition(t, p) for t in names for p in sorted(await _partitions(consumer, t))]
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    for tp in parts:
        await consumer.position(tp)
    seen: dict[str, dict[str, float]] = {}

    async def watch() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for tp, records in batches.items():
                hop = names[tp.topic]
                for record in records:
                    for sid in set(_ID.findall(record.value or b"")):
                        marks = seen.setdefault(sid.decode(), {})
                        marks[hop] = record.timestamp / 1000.0
                        if hop == "decisions":
                            marks["consumed"] = now

    watcher = asyncio.create_task(watch())
    producer = AIOKafkaProducer(bootstrap_servers=dep.bootstrap, linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    try:
        for i in range(signals):
            sid = f"H{i:05d}"
            value = {"signal_id": sid, "account": "H1", "symbol": "S001", "ts": SESSION_OPEN_MS + i}
            sent[sid] = time.time()
            await producer.send_and_wait(
                topics.name("signals"), key=b"H1", value=orjson.dumps({**value, "target_weight": 0.01})
            )
            await asyncio.sleep(gap)
        await asyncio.sleep(3.0)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await producer.stop()
        await consumer.stop()
    steps: dict[str, list[float]] = {hop: [] for hop in (*HOPS, "consumed")}
    for sid, at in sent.items():
        marks, previous = seen.get(sid, {}), at
        for hop in steps:
            if hop in marks:
                steps[hop].append((marks[hop] - previous) * 1000.0)
                previous = marks[hop]
    total = [(seen[s]["consumed"] - at) * 1000.0 for s, at in sent.items() if "consumed" in seen.get(s, {})]
    report = {hop: round(statistics.median(ms), 1) for hop, ms in steps.items() if ms}
    return {"median_ms_per_hop": report, "median_ms_total": round(statistics.median(total), 1) if total else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signals", type=int, default=40)
    parser.add_argument("--gap", type=float, default=0.2)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP))
    args = parser.parse_args()
    with kafka(args.bootstrap) as (bootstrap, _):
        dep = Deployment(bootstrap, WORK / "hops", 4)
        try:
            dep.start()
            result = asyncio.run(measure(dep, args.signals, args.gap))
        finally:
            dep.close()
    print(orjson.dumps({**result, "load": list(os.getloadavg())}, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
