"""The Faust app: the market agent, the sequencer and the level chain (SPEC §1, §2, §7, §8, §10).

    market.bars ──► market agent (Level 2, table level-market) ──► risk.market ──┐
    exec.fills · strategy.signals · account.equity · risk.control ──────────────┴─► sequencer
        ──► risk.sequenced ──► level chain per partition: Level 1 ─► Level 3 ─► Level 4 + kernel
        (tables level-account, level-symbol, level-portfolio) ──► risk.decisions · halts · events · runs

A signal crosses Kafka twice (its input topic, then `risk.sequenced`); Level 2 runs once per bar and
its results ride on the bar into every partition of the sequenced log, so a recorded partition
replays with nothing else. The market agent and the chain are `PartitionedAgent`s: one batch is one
crash-safe unit (frames, one marker written last, sends recognisable by their markers and ids);
offsets are committed only from what an agent reported handled (`CommitGate`). After an unclean
stop the local RocksDB files are dropped and the tables rebuilt from their changelogs, a consistent
prefix. Static group membership (a stable instance id per worker) and a 10 s session let a worker
restarted after kill -9 take its partitions back without waiting for the group.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import faust
import structlog
from prometheus_client import CollectorRegistry

from schemas.config import Config
from streams import security
from streams.core.levels.account.controls import signature_check
from streams.core.levels.market.stage import MarketStage
from streams.kafka_io import read_range, sent_markers
from streams.metrics import Metrics, faust_lags, install_faust_sensor
from streams.topology import SRC_HEADER, Topics
from streams.worker import faust_compat
from streams.worker.chain import LevelChain
from streams.worker.commit import CommitGate, Refetched
from streams.worker.market import MarketAgent
from streams.worker.outputs import OUTPUT_TOPICS, Outputs, RecentOutputs
from streams.worker.partitioned import Runtime
from streams.worker.sequencer import Sequencer
from streams.worker.settings import WorkerSettings, control_key
from streams.worker.web import register_web

log = structlog.get_logger("riskguard.worker")

SENT_DEPTH = 50_000  # records per output partition an agent reads back when it takes a partition over
WATCH_INTERVAL_S = 2.0  # how often agents look for partitions whose stream brings nothing below the end
ACCOUNT_INPUTS = ("fills", "signals", "equity", "control")


class CleanStop:
    """The marker of a worker that stopped cleanly; without it, local table files are not trusted."""

    def __init__(self, appdir: Path) -> None:
        self.appdir = appdir
        self.marker = appdir / "RUNNING"

    def arm(self, tabledir: Path) -> bool:
        """Drop local tables after an unclean stop (they recover from the changelogs); returns True if dropped."""
        self.appdir.mkdir(parents=True, exist_ok=True)
        dropped = False
        if self.marker.exists() and tabledir.exists():
            shutil.rmtree(tabledir)
            dropped = True
        self.marker.write_text(str(os.getpid()), encoding="utf-8")
        atexit.register(self.disarm)
        return dropped

    def disarm(self) -> None:
        if self.marker.exists() and self.marker.read_text(encoding="utf-8") == str(os.getpid()):
            self.marker.unlink()


def instance_id(settings: WorkerSettings) -> str:
    """This worker's static member id: the configured one, else the host (unique with the web port on a host)."""
    return settings.group_instance_id or f"{settings.app_id}-{socket.gethostname()}-{settings.web_port}"


async def watch_all(watches: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """One watchdog tick: each agent's read past its stream, none of them able to stop the worker.

    The reads go to the broker themselves (`read_range`); while the broker is away they fail, and an
    exception out of a Faust timer crashes the whole app (seen in the broker-restart test). A failed read
    is logged and tried again at the next tick; the agent's position has not moved, so nothing is lost.
    """
    for watch in watches:
        try:
            await watch()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "watchdog_read_failed", agent=getattr(watch, "__self__", watch).__class__.__name__, error=repr(exc)
            )


def build_app(config: Config, settings: WorkerSettings, metrics: Metrics | None = None) -> faust.App:
    """The Faust app with its topics, tables, the market agent, the sequencer and the level chain."""
    faust_compat.check()
    topics = Topics.from_settings(config.kafka)
    appdir = Path(settings.datadir) / settings.app_id
    metrics = metrics if metrics is not None else Metrics(CollectorRegistry())
    appdir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
        broker_credentials=security.faust_credentials(),
        store=settings.store,
        datadir=str(appdir),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        topic_disable_leader=True,
        processing_guarantee=settings.processing_guarantee,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=instance_id(settings),
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        broker_rebalance_timeout=max(30.0, settings.session_timeout_s),
        broker_request_timeout=max(40.0, settings.session_timeout_s + 1),
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_bind,
        key_serializer="raw",
        value_serializer="raw",
        producer_linger_ms=0,  # the sends of a batch leave together anyway: the sender runs at its one await
        producer_max_request_size=4 * 1024 * 1024,
        broker_commit_every=2000,
        broker_commit_interval=0.5,
        table_standby_replicas=settings.standby_replicas,
        stream_buffer_maxsize=8192,
    )
    faust_compat.idempotent_producer(app)  # a retry after the broker comes back writes nothing twice
    faust_compat.fetch_wait(app, settings.fetch_max_wait_ms)  # no long fetch on idle partitions holds busy ones
    if settings.store.startswith("rocksdb") and CleanStop(appdir).arm(Path(app.conf.tabledir)):
        log.warning("unclean_stop_local_tables_dropped", tabledir=str(app.conf.tabledir))
    install_faust_sensor(app, metrics.registry)
    n = settings.partitions
    kafka_security = security.KafkaSecurity.from_env()

    def topic(logical: str, partitions: int | None = None) -> faust.TopicT:
        return app.topic(
            topics.name(logical),
            partitions=partitions or n,
            key_serializer="raw",
            value_serializer="raw",
            internal=True,
        )

    bars = topic("bars", 1)
    market = topic("market", 1)
    inputs = {name: topic(name) for name in ACCOUNT_INPUTS}
    sequenced = topic("sequenced")
    out_topics = {name: topic(name) for name in OUTPUT_TOPICS}
    output_names = {name: topics.name(name) for name in OUTPUT_TOPICS}
    gate = CommitGate(app, {t.get_topic_name() for t in (bars, sequenced)})
    recent = RecentOutputs()
    outputs = Outputs(out_topics, metrics, recent)

    async def fill(stage: str, tp: Any, first: int, end: int) -> list[Refetched]:
        """What the stream did not hand over between `first` and `end`, read directly (see `commit.py`)."""
        missing = await read_range(settings.bootstrap, tp.topic, tp.partition, first, end, security=kafka_security)
        log.warning(
            "input_gap_filled", stage=stage, topic=tp.topic, partition=tp.partition, first=first, count=len(missing)
        )
        metrics.gap_filled(stage, len(missing))
        return [Refetched(rec) for rec in missing]

    async def already_sent(partition: int, names: tuple[str, ...]) -> set[bytes]:
        """The markers already on partition `partition` of `names` (read when a partition is taken over)."""
        return await sent_markers(settings.bootstrap, names, partition, SENT_DEPTH, SRC_HEADER, security=kafka_security)

    runtime = Runtime(app, settings, metrics, gate, fill, already_sent)
    market_agent = MarketAgent(
        runtime,
        config,
        bars,
        market,
        outputs,
        (topics.name("market"), output_names["events"], output_names["deadletter"]),
    )
    check = signature_check(control_key(), config.control.require_signature)
    sequencer = Sequencer(runtime, {**inputs, "market": market}, sequenced, outputs, check)
    chain = LevelChain(runtime, config, sequenced, outputs, output_names)

    app.agent(bars, name="level-market")(market_agent.run)
    names = [t.get_topic_name() for t in (market, *inputs.values())]

    @app.task  # type: ignore[untyped-decorator]
    async def sequencer_task() -> None:
        """The sequencer on a consumer of its own (`Sequencer.run`), started and stopped with the app."""
        for source in (market, *inputs.values()):
            await source.maybe_declare()  # no Faust agent reads them, so Faust would not create them
        await sequencer.run(
            settings.bootstrap,
            f"{settings.app_id}-sequencer",
            instance_id(settings) + "-sequencer",
            names,
            kafka_security.aiokafka_kwargs(),
        )

    app.agent(sequenced, name="level-chain")(chain.run)

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def consumer_lag() -> None:
        metrics.replace_lags([*faust_lags(app), *sequencer.lags()])

    @app.timer(interval=WATCH_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def watchdog() -> None:
        await watch_all((market_agent.watch, chain.watch))

    bars_name = bars.get_topic_name()

    def levels_of(partition: int) -> dict[str, Any]:
        """The stages of a partition's levels; Level 2 from the market agent where this worker holds it."""
        holds_market = any(tp.topic == bars_name for tp in app.consumer.assignment())
        return {"market": market_agent.stage() if holds_market else MarketStage(config), **chain.stages_of(partition)}

    register_web(
        app, config, levels_of, sequencer.stats, metrics, inputs["control"], n, sequenced.get_topic_name(), recent
    )
    return app
