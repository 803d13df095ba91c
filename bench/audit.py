"""The audit's throughput: decisions (and halts) verified per second, in memory and through the broker.

The sequenced log of a `riskguard gen` tape is built in process (`streams.audit.core.sequence_tape`: Level 2
once per bar, account events to their partition, as the sequencer writes them) and the published outputs are
the replay's decisions and halts — no worker needed, the audit's own cost is what is measured.

- `audit_core_decisions_per_s`: `audit_log` on those packets and values: `decode_packet` (every event
  validated again), the partition's level chain, matching by id, each decision checked against its facts.
- `audit_kafka_decisions_per_s`: the packets produced to a fresh deployment's `risk.sequenced` (one
  partition each) and the outputs to `risk.decisions` / `risk.halts` (account-keyed), then `riskguard
  audit` once (`streams.audit.kafka.audit_once`): from the first read to the report, Kafka reads included.

Usage: python -m bench.audit [--symbols 100] [--accounts 20] [--days 1] [--bootstrap 127.0.0.1:19092]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from schemas.config import Config, load_config
from streams.audit.core import audit_log, sequence_tape
from streams.audit.kafka import audit_once
from streams.core.engine import Engine
from streams.kafka_io import ensure_topics
from streams.tape import replay
from streams.topology import Topics
from streams.worker.settings import partition_for


def published(lines: list[bytes], config: Config) -> list[tuple[str, dict[str, Any]]]:
    """The decisions and halts a deployment publishes for the tape (the replay's), as JSON values."""
    sink = io.BytesIO()
    replay(Engine(config), lines, sink)
    envelopes = (orjson.loads(line) for line in sink.getvalue().splitlines())
    return [(e["topic"], e["value"]) for e in envelopes if e["topic"] in ("decisions", "halts")]


def core_rate(lines: list[bytes], config: Config, partitions: int) -> dict[str, Any]:
    """`audit_log` in memory: decisions and halts verified per second."""
    packets = sequence_tape(config, lines, partitions)
    log = [(p, offset, raw) for p, part in enumerate(packets) for offset, raw in enumerate(part)]
    outputs = published(lines, config)
    started = time.perf_counter()
    report = audit_log(config, log, outputs)
    took = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(f"the audit of a clean log found {len(report.findings)} problem(s)")
    return {
        "verified": report.counts["verified"],
        "log_records": len(log),
        "seconds": round(took, 2),
        "rate": report.counts["verified"] / took,
    }


async def _produce(
    topics: Topics, bootstrap: str, packets: list[list[bytes]], outputs: list[tuple[str, dict[str, Any]]]
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4 * 1024 * 1024, enable_idempotence=True
    )
    await producer.start()
    try:
        sequenced = topics.name("sequenced")
        for partition, part in enumerate(packets):
            for raw in part:
                await producer.send(sequenced, raw, partition=partition)
        for topic, value in outputs:
            account = str(value["account"])
            partition = partition_for(account, len(packets))
            await producer.send(topics.name(topic), orjson.dumps(value), key=account.encode(), partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def kafka_rate(lines: list[bytes], bootstrap: str, prefix: str, partitions: int) -> dict[str, Any]:
    """`audit_once` against a deployment's topics filled with the log and its outputs."""
    config = load_config(None).model_copy(
        update={"kafka": load_config(None).kafka.model_copy(update={"topic_prefix": prefix})}
    )
    topics = Topics(prefix=prefix)
    asyncio.run(ensure_topics(topics, bootstrap, partitions))
    packets = sequence_tape(config, lines, partitions)
    outputs = published(lines, config)
    asyncio.run(_produce(topics, bootstrap, packets, outputs))
    started = time.perf_counter()
    report = asyncio.run(audit_once(config, bootstrap, grace=0.0))
    took = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(f"the audit of a clean deployment found {len(report.findings)} problem(s)")
    return {"verified": report.counts["verified"], "seconds": round(took, 2), "rate": report.counts["verified"] / took}


def main() -> None:
    import json
    import uuid

    from bench.pipeline import tape_lines
    from bench.run import delete_topics

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    args = parser.parse_args()
    config = load_config(None)
    lines = tape_lines(args.symbols, args.accounts, args.days, 7, config)
    prefix = f"ba{uuid.uuid4().hex[:8]}."
    try:
        result = {"core": core_rate(lines, config, 4), "kafka": kafka_rate(lines, args.bootstrap, prefix, 4)}
    finally:
        asyncio.run(delete_topics(args.bootstrap, (prefix,)))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
