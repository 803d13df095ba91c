"""The floor of Faust's per-message path: a bare agent that only counts the events of one topic.

`--events` small bar messages are produced to a fresh 4-partition topic, then one Faust app (memory
store, raw serializers, no web server) with one agent iterating `stream.events()` consumes them; the
figure is events/s from the first event to the last and the worker's CPU per event. It is what any
riskguard agent pays per message before doing anything, to set beside `pipeline_events_per_s` and the
bare aiokafka passthrough (`docs/performance.md`).

Usage: python -m bench.faust_floor [--events 40000]   (KAFKA_BOOTSTRAP_SERVERS, default 127.0.0.1:19092)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
import uuid
from typing import Any

BODY = b'{"type":"bar","symbol":"AAA","ts":"2024-01-02T14:31:00Z","open":1,"high":2,"low":0.5,"close":1.5,"volume":10}'


async def _produce(bootstrap: str, topic: str, events: int) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, BODY, key=str(i % 50).encode()) for i in range(events)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _delete(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    import faust

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=40_000)
    args = parser.parse_args(argv)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    name = f"floor-{uuid.uuid4().hex[:8]}"
    asyncio.run(_produce(bootstrap, name, args.events))
    app = faust.App(
        name,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        datadir=f"out/bench/{name}",
    )
    topic = app.topic(name, key_serializer="raw", value_serializer="raw")
    seen: dict[str, Any] = {"n": 0}

    @app.agent(topic)
    async def count(stream: Any) -> None:
        async for _ in stream.events():
            if seen["n"] == 0:
                seen["t0"], seen["c0"] = time.perf_counter(), time.process_time()
            seen["n"] += 1
            if seen["n"] >= args.events:
                wall = time.perf_counter() - seen["t0"]
                cpu = time.process_time() - seen["c0"]
                print(
                    f"faust floor: {args.events / wall:,.0f} events/s, {cpu / args.events * 1e6:.1f} us CPU per event,"
                    f" load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
                await _delete(bootstrap, name)
                shutil.rmtree(f"out/bench/{name}", ignore_errors=True)
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
