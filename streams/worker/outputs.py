"""The output topics (SPEC §2) and how an agent publishes to them: metrics, one log line, dead letters."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import faust
import orjson
import structlog

from schemas.outputs import DeadLetterSource, Decision
from streams.core.engine import LevelFailure
from streams.core.items import Output
from streams.logs import log_output
from streams.metrics import Metrics
from streams.tape import dead_letter as make_dead_letter
from streams.topology import encode_item
from streams.worker.partitioned import Send, latency_since

log = structlog.get_logger("riskguard.worker")

OUTPUT_TOPICS = ("decisions", "halts", "events", "rebalance_runs", "deadletter")


def wall_clock() -> str:
    """The dead letter's `ts`: the one wall-clock field of the product (SPEC §4)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"


class Outputs:
    """Publishes outputs as `Send`s that count themselves in the metrics and log their line when sent."""

    def __init__(self, topics: dict[str, faust.TopicT], metrics: Metrics) -> None:
        self.topics = topics
        self.metrics = metrics

    def send(self, output: Output, partition: int | None, marker: bytes, t0: int | None = None) -> Send:
        """`output` to its topic's `partition`, recognisable by `marker` if a redone batch sends it again."""
        metrics = self.metrics

        def sent() -> None:
            metrics.observe(output)
            log_output(log, output)
            if t0 and isinstance(output.value, Decision):
                metrics.latency(latency_since(t0))

        return Send(
            topic=self.topics[output.topic],
            key=output.key.encode() if output.key is not None else None,
            value=orjson.dumps(output.value.model_dump(mode="json")),
            partition=partition,
            marker=marker,
            on_sent=sent,
        )

    def failure(self, failure: LevelFailure, source: DeadLetterSource, partition: int | None, marker: bytes) -> Send:
        """A dead letter for an item a level raised on, with the item and where it was read."""
        self.metrics.level_error(failure.level)
        log.error("level_error", level=failure.level, source=source.model_dump(), error=failure.error)
        letter = make_dead_letter(source, failure.item.account, encode_item(failure.item), failure.error, wall_clock())
        return self.send(letter, partition, marker)

    def rejected(
        self,
        logical: str,
        source: DeadLetterSource,
        key: bytes | None,
        raw: bytes,
        error: str,
        headers: Sequence[Any] = (),
    ) -> Send:
        """A dead letter for a message of input topic `logical` that is not valid; its headers travel with it."""
        text_key = key.decode(errors="replace") if key is not None else None
        letter = make_dead_letter(source, text_key, raw, f"{logical}: {error}", wall_clock())
        self.metrics.dead_letter(logical)
        log.warning("dead_letter", topic=source.topic, offset=source.offset, error=error)
        marker = f"dl|{source.topic}|{source.partition}|{source.offset}".encode()
        return Send(
            topic=self.topics["deadletter"],
            key=key,
            value=orjson.dumps(letter.value.model_dump(mode="json")),
            partition=None,
            marker=marker,
            headers=tuple(headers),
        )
