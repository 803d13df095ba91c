"""The Faust app: a sequencer and one table-backed agent per guard level over Kafka (SPEC §1, §2, §7, §8).

    inputs ──► sequencer ──► risk.sequenced ──► level2 (market) ──► risk.level2 ──► level1 (account)
           ──► risk.level1 ──► level3 (symbol) ──► risk.level3 ──► level4 (portfolio) ──► outputs

Each level agent is the same thin shell (`_level_agent`): decode the item, load the level's state
for the keys it touches from its own Table (RocksDB by default), call the level's stage from
`streams.core.stages` — the code `riskguard replay` runs — store the touched keys, skip offsets it
has already applied (effectively-once), and send the items on to the next level in the same
partition. Bars go to every partition, so each partition's log is a complete, replayable sequence.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import orjson
import structlog

from schemas.config import Config
from schemas.outputs import DeadLetterSource
from streams.core.snapshot import DUMPERS, LOADERS, PARTITION_KEY
from streams.core.stages import AccountStage, Item, MarketStage, PortfolioStage, SymbolStage, item_for
from streams.tape import BadMessage, SecurityRefusal, decode_value, load_json, security_event
from streams.tape import dead_letter as make_dead_letter
from streams.topology import Topics, decode_item, encode_item

log = structlog.get_logger("riskguard.worker")

LEVELS = ("market", "account", "symbol", "portfolio")
_SOURCES = {"market": "sequenced", "account": "level2", "symbol": "level1", "portfolio": "level3"}
_SINKS = {"market": "level2", "account": "level1", "symbol": "level3", "portfolio": None}


@dataclass(frozen=True)
class WorkerSettings:
    """How the worker connects and stores state; every field has an environment override."""

    bootstrap: str = "127.0.0.1:9092"
    app_id: str = "riskguard"
    partitions: int = 4
    store: str = "rocksdb://"
    processing_guarantee: str = "at_least_once"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    web_bind: str = "127.0.0.1"
    datadir: str = ".cache/worker"

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> WorkerSettings:
        env = os.environ
        values: dict[str, Any] = {
            "bootstrap": env.get("KAFKA_BOOTSTRAP_SERVERS", config.kafka.bootstrap_servers),
            "app_id": env.get("RISKGUARD_APP_ID", config.kafka.app_id),
            "partitions": int(env.get("RISKGUARD_PARTITIONS", config.kafka.partitions)),
            "store": env.get("RISKGUARD_STORE", "rocksdb://"),
            "processing_guarantee": env.get("RISKGUARD_PROCESSING_GUARANTEE", "at_least_once"),
            "web_port": int(env.get("RISKGUARD_WEB_PORT", "6066")),
            "web_host": env.get("RISKGUARD_WEB_HOST", "127.0.0.1"),
            "web_bind": env.get("RISKGUARD_WEB_BIND", "127.0.0.1"),
            "datadir": env.get("RISKGUARD_DATADIR", ".cache/worker"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def control_key() -> bytes | None:
    """The operators' HMAC key from RISKGUARD_CONTROL_KEY (never logged)."""
    key = os.environ.get("RISKGUARD_CONTROL_KEY")
    return key.encode("utf-8") if key else None


def control_checker(config: Config) -> Callable[[dict[str, Any]], str | None]:
    """The signature check of SPEC §8 with this deployment's key and policy."""
    from functools import partial

    from streams.core.controls import check_signature

    return partial(check_signature, key=control_key(), required=config.control.require_signature)


def _new_stage(level: str, config: Config, partition: int) -> Any:
    if level == "market":
        return MarketStage(config, partition)
    return {"account": AccountStage, "symbol": SymbolStage, "portfolio": PortfolioStage}[level](config)


def _touched(level: str, item: Item, forwarded: list[Item]) -> set[str]:
    """The per-account keys a level may have changed while handling `item`."""
    keys = {PARTITION_KEY}
    if item.account is not None:
        keys.add(item.account)
    if level == "account":
        keys.update(i.account for i in forwarded if i.kind == "account" and i.account is not None)
    elif level in ("symbol", "portfolio") and item.kind == "bar":
        keys.update(item.notes.get("accounts", {}))
    return keys


def _watchers(stage: Any, item: Item) -> set[str]:
    """Level 3 marks trailing peaks of every watcher of a bar's symbol, with or without a note."""
    if isinstance(stage, SymbolStage) and item.kind == "bar":
        return set(stage.watchers.get(item.event.symbol, ()))
    return set()


def build_app(config: Config, settings: WorkerSettings) -> faust.App:
    """The Faust app with its topics, tables, the sequencer and the four level agents."""
    topics = Topics.from_settings(config.kafka)
    Path(settings.datadir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
        store=settings.store,
        datadir=str(Path(settings.datadir) / settings.app_id),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        processing_guarantee=settings.processing_guarantee,
        consumer_auto_offset_reset="earliest",
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_bind,
        key_serializer="raw",
        value_serializer="raw",
        producer_linger_ms=1,
        broker_commit_every=500,
        broker_commit_interval=0.5,
        table_standby_replicas=0,
    )
    n = settings.partitions

    def topic(logical: str, partitions: int | None = None) -> faust.TopicT:
        return app.topic(
            topics.name(logical),
            partitions=partitions or n,
            key_serializer="raw",
            value_serializer="raw",
            internal=True,
        )

    inputs = {
        name: topic(name, 1 if name == "bars" else n) for name in ("bars", "fills", "signals", "equity", "control")
    }
    outputs = {name: topic(name) for name in ("decisions", "halts", "events", "rebalance_runs", "deadletter")}
    internal = {name: topic(name) for name in ("sequenced", "level2", "level1", "level3")}
    by_kafka_name = {topics.name(name): name for name in inputs}

    sequencer_stats: Counter[str] = Counter()
    control_check = control_checker(config)

    async def dead_letter(event: Any, logical: str, error: str) -> None:
        sequencer_stats["dead_letters"] += 1
        raw = event.value if isinstance(event.value, bytes) else b""
        key = event.key.decode(errors="replace") if isinstance(event.key, bytes) else None
        source = DeadLetterSource(
            topic=event.message.topic, partition=event.message.partition, offset=event.message.offset
        )
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"  # the one wall-clock field (SPEC §4)
        letter = make_dead_letter(source, key, raw, f"{logical}: {error}", when)
        await outputs["deadletter"].send(
            key=event.key, value=orjson.dumps(letter.value.model_dump(mode="json")), headers=event.headers, force=True
        )
        log.warning("dead_letter", topic=event.message.topic, offset=event.message.offset, error=error)

    @app.agent(app.topic(*inputs_names(inputs, topics), key_serializer="raw", value_serializer="raw"), name="sequencer")
    async def sequencer(stream: Any) -> None:
        async for event in stream.events():
            logical = by_kafka_name.get(event.message.topic, "?")
            raw = event.value if isinstance(event.value, bytes) else b""
            try:
                value: Any = None  # read below when a control is refused for security
                value = load_json(raw)
                model = decode_value(logical, value, control_check)
            except BadMessage as exc:
                await dead_letter(event, logical, str(exc))
                if isinstance(exc, SecurityRefusal):
                    clock = int(time.time() * 1000)
                    warning = security_event(value if isinstance(value, dict) else {}, str(exc), clock)
                    await outputs["events"].send(
                        key=warning.key.encode() if warning.key else None,
                        value=orjson.dumps(warning.value.model_dump(mode="json")),
                        force=True,
                    )
                continue
            sequencer_stats[f"{logical}_in"] += 1
            item = item_for(logical, model)
            payload = encode_item(item)
            if item.account is None:
                for partition in range(n):
                    await internal["sequenced"].send(
                        key=None, value=payload, partition=partition, headers=event.headers, force=True
                    )
            else:
                await internal["sequenced"].send(
                    key=item.account.encode(), value=payload, headers=event.headers, force=True
                )

    registry: dict[str, dict[int, Any]] = {}
    for level in LEVELS:
        registry[level] = _level_agent(
            app, config, level, internal[_SOURCES[level]], internal.get(_SINKS[level] or ""), outputs
        )
    _register_web(app, registry, sequencer_stats)
    return app


def inputs_names(inputs: dict[str, Any], topics: Topics) -> list[str]:
    return [topics.name(name) for name in inputs]


def _level_agent(
    app: faust.App,
    config: Config,
    level: str,
    source: faust.TopicT,
    sink: faust.TopicT | None,
    outputs: dict[str, faust.TopicT],
) -> dict[int, Any]:
    table = app.Table(f"level-{level}", default=None, key_type=str, value_type=bytes)
    stages: dict[int, Any] = {}
    applied: dict[int, int] = {}
    dump: Callable[..., dict[str, Any]] = DUMPERS[level]
    load = LOADERS[level]

    def stage_for(partition: int) -> Any:
        stage = stages.get(partition)
        if stage is None:
            stage = _new_stage(level, config, partition)
            prefix = f"{partition}/"
            for raw_key, value in table.items():
                key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
                if key.startswith(prefix) and value is not None:
                    name = key[len(prefix) :]
                    if name == "#applied":
                        applied[partition] = int(value)
                    else:
                        load(stage, name, orjson.loads(value))
            stages[partition] = stage
        return stage

    async def on_revoked(*_: Any, **__: Any) -> None:
        stages.clear()
        applied.clear()

    app.on_partitions_revoked.connect(on_revoked)

    async def agent(stream: Any) -> None:
        async for event in stream.events():
            partition, offset = event.message.partition, event.message.offset
            stage = stage_for(partition)
            if offset <= applied.get(partition, -1):
                continue  # redelivered after a crash or rebalance: already applied
            item = decode_item(event.value)
            results, forwarded = stage.process(item)
            prefix = f"{partition}/"
            keys = _touched(level, item, forwarded) | _watchers(stage, item)
            if level == "market":
                snapshot = dump(stage)
            else:
                snapshot = dump(stage, keys)
            for key, value in snapshot.items():
                table[prefix + key] = orjson.dumps(value)
            table[prefix + "#applied"] = str(offset).encode()
            applied[partition] = offset
            for output in results:
                await outputs[output.topic].send(
                    key=output.key.encode() if output.key is not None else None,
                    value=orjson.dumps(output.value.model_dump(mode="json")),
                    force=True,
                )
            if sink is not None:
                for nxt in forwarded:
                    await sink.send(
                        key=nxt.account.encode() if nxt.account is not None else None,
                        value=encode_item(nxt),
                        partition=partition,
                        headers=event.headers,
                        force=True,
                    )

    app.agent(source, name=f"level-{level}")(agent)
    return stages


def _register_web(app: faust.App, registry: dict[str, dict[int, Any]], sequencer_stats: Counter[str]) -> None:
    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "app": app.conf.id})

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        lines = ["# TYPE riskguard_level_events_total counter"]
        for level, stages in registry.items():
            total: Counter[str] = Counter()
            for stage in stages.values():
                total.update(stage.stats)
            for name, value in sorted(total.items()):
                lines.append(f'riskguard_level_events_total{{level="{level}",name="{name}"}} {value}')
        for name, value in sorted(sequencer_stats.items()):
            lines.append(f'riskguard_level_events_total{{level="sequencer",name="{name}"}} {value}')
        return web.text("\n".join(lines) + "\n", content_type="text/plain")
