"""The output topics (SPEC §2) and how an agent publishes to them: metrics, one log line, dead letters."""

from __future__ import annotations

import time
from collections import deque
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


class RecentOutputs:
    """The latest decisions and halts of each account this worker published, newest first (the operator page).

    In memory only: after a restart the lists fill again with what the worker publishes; the topics hold
    the full history.
    """

    TOPICS = ("decisions", "halts")

    def __init__(self, depth: int = 10) -> None:
        self.depth = depth
        self.accounts: dict[str, dict[str, deque[dict[str, Any]]]] = {}

    def add(self, topic: str, value: dict[str, Any]) -> None:
        account = value.get("account")
        if topic not in self.TOPICS or not isinstance(account, str):
            return
        lists = self.accounts.setdefault(account, {name: deque(maxlen=self.depth) for name in self.TOPICS})
        lists[topic].appendleft(value)

    def of(self, account: str) -> dict[str, list[dict[str, Any]]]:
        lists = self.accounts.get(account, {})
        return {name: list(lists.get(name, ())) for name in self.TOPICS}


class Outputs:
    """Publishes outputs as `Send`s that count themselves in the metrics and log their line when sent."""

    def __init__(self, topics: dict[str, faust.TopicT], metrics: Metrics, recent: RecentOutputs | None = None) -> None:
        self.topics = topics
        self.metrics = metrics
        self.recent = recent

    def send(self, output: Output, partition: int | None, marker: bytes, t0: int | None = None) -> Send:
        """`output` to its topic's `partition`, recognisable by `marker` if a redone batch sends it again."""
        metrics, recent = self.metrics, self.recent
        payload = output.value.model_dump(mode="json")

        def sent() -> None:
            metrics.observe(output)
            log_output(log, output)
            if t0 and isinstance(output.value, Decision):
                metrics.latency(latency_since(t0))
            if recent is not None:
                recent.add(output.topic, payload)

        return Send(
            topic=self.topics[output.topic],
            key=output.key.encode() if output.key is not None else None,
            value=orjson.dumps(payload),
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
