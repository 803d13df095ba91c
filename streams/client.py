"""The client for execution services (SPEC §11): ask the guard before an order, await its decision by id.

    async with GuardClient() as guard:                       # connection, prefix, partitions: as the worker's
        decision = await guard.check(signal, timeout=2.0)    # DENY `guard_timeout` (local) when no answer
        if decision.action in ("ALLOW", "CLIP") and not is_local(decision): ...

How it finds the answer. The guard's decision for a signal has a known id, `decision_id(account,
"signal", signal_id, symbol)` (SPEC §7), and is published on the decisions partition the sequencer
routes the account to: Kafka's default partitioner (murmur2 of the account) over the deployment's
partition count (`streams.worker.settings.partition_for`, the function the sequencer calls). The
client therefore reads only the partitions of the accounts it asks about, from the end as it was
*before* the signal was sent, and resolves the waiting call whose id the record carries. The signal
itself goes to that partition of the signals topic, keyed by account.

Fail closed. A call that gets no decision within its timeout (worker stopped, broker unreachable,
a signal the guard dropped as a duplicate) returns a `LocalDecision`: `DENY`, reason `guard_timeout`,
`layer: account`, a `local-` id, `config_version: "local"`, `facts.local: true` and a `local: true`
field that the published `Decision` model forbids, so it can be neither mistaken for nor replayed as
the guard's. It is never published.

Configuration. Anything left `None` comes from where the worker takes it: the YAML of
`RISKGUARD_CONFIG` (`kafka:` block), then `KAFKA_BOOTSTRAP_SERVERS` / `RISKGUARD_PARTITIONS`
(`WorkerSettings.from_config`), and SASL/SCRAM and TLS from the `RISKGUARD_KAFKA_*` variables
(`streams.security.KafkaSecurity.from_env`). The partition rule is the worker's own
(`streams.worker.settings.partition_for`), so it cannot drift from the sequencer's; importing it does not
import Faust (the client needs aiokafka, pydantic and the schemas only).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Container, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from pydantic import BaseModel

from schemas.config import Config, load_config
from schemas.inputs import Equity, Fill, Signal
from schemas.outputs import Action, Decision, Halt, Layer, Origin
from streams.core.ids import decision_id, stable_id
from streams.security import KafkaSecurity
from streams.topology import Topics
from streams.worker.settings import WorkerSettings, partition_for

log = structlog.get_logger("riskguard.client")

DEFAULT_TIMEOUT_S = 2.0
"""How long `check()` waits by default: far above the guard's p99 (SPEC §10), short enough to trade on."""
TIMEOUT_REASON = "guard_timeout"
LOCAL_CONFIG_VERSION = "local"
CONFIG_ENV = "RISKGUARD_CONFIG"

T = TypeVar("T")


class LocalDecision(Decision):
    """A decision the client made itself (fail closed), never the guard's: `local` is always true."""

    local: Literal[True] = True


class GuardTopicsMissing(RuntimeError):
    """The guard's topics do not exist, or have another partition count than the deployment's."""


def is_local(decision: Decision) -> bool:
    """True for the client's own fail-closed answer, False for a decision the guard published."""
    return isinstance(decision, LocalDecision)


def expected_decision_id(signal: Signal) -> str:
    """The id the guard gives its decision on `signal` (SPEC §7)."""
    return decision_id(signal.account, Origin.SIGNAL.value, signal.signal_id, signal.symbol)


def decision_partition(account: str, partitions: int) -> int:
    """The partition of the decisions (and signals) topic that holds `account`: the sequencer's choice."""
    return partition_for(account, partitions)


def fail_closed(signal: Signal, timeout_s: float) -> LocalDecision:
    """The answer when the guard did not answer in time: DENY `guard_timeout`, marked local."""
    price = signal.price if signal.price is not None else 0.0
    return LocalDecision(
        decision_id=stable_id("local", signal.account, Origin.SIGNAL.value, signal.signal_id, signal.symbol),
        account=signal.account,
        symbol=signal.symbol,
        ts=signal.ts,
        origin=Origin.SIGNAL,
        source_id=signal.signal_id,
        action=Action.DENY,
        side=None,
        qty=0.0,
        requested_qty=0.0,
        price=price,
        notional=0.0,
        layer=Layer.ACCOUNT,
        reason=TIMEOUT_REASON,
        facts={"local": True, "timeout_s": timeout_s, "price": price},
        config_version=LOCAL_CONFIG_VERSION,
    )


def matching_decision(raw: bytes, wanted: Container[str]) -> Decision | None:
    """The decision in a record of the decisions topic when its id is one of `wanted`, else None."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or value.get("decision_id") not in wanted:
        return None
    return Decision.model_validate(value)


def signed_qty(decision: Decision) -> float:
    """The decision's trade as a signed share count (seed 001's `qty_delta`): + buy, - sell, 0 nothing."""
    if decision.action not in (Action.ALLOW, Action.CLIP) or decision.side is None:
        return 0.0
    return decision.qty if decision.side.value == "BUY" else -decision.qty


def target_signal(
    account: str, symbol: str, price: float, target_notional: float, ts_ms: int, signal_id: str
) -> Signal:
    """Seed 001's integration call as a signal: a target notional at a reference price."""
    return Signal(
        signal_id=signal_id,
        account=account,
        symbol=symbol,
        ts=ts_ms,
        price=price,
        target_notional=target_notional,
    )


@dataclass(frozen=True)
class ClientSettings:
    """Where the guard is: broker, topic names, partition count, security (safe to print)."""

    bootstrap: str
    topic_prefix: str
    partitions: int
    security: KafkaSecurity

    @classmethod
    def resolve(
        cls,
        bootstrap_servers: str | None = None,
        topic_prefix: str | None = None,
        partitions: int | None = None,
        config: Config | str | Path | None = None,
        security: KafkaSecurity | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ClientSettings:
        """The given values; for each None, the worker's: config file (RISKGUARD_CONFIG), then its env overrides."""
        env = os.environ if env is None else env
        if not isinstance(config, Config):
            config = load_config(config if config is not None else env.get(CONFIG_ENV))
        worker = WorkerSettings.from_config(config)
        return cls(
            bootstrap=bootstrap_servers or worker.bootstrap,
            topic_prefix=topic_prefix if topic_prefix is not None else config.kafka.topic_prefix,
            partitions=partitions or worker.partitions,
            security=security or KafkaSecurity.from_env(env),
        )


class GuardClient:
    """Asks the guard about signals and awaits its decisions (asyncio, aiokafka)."""

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        topic_prefix: str | None = None,
        partitions: int | None = None,
        *,
        config: Config | str | Path | None = None,
        security: KafkaSecurity | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        client_id: str | None = None,
    ) -> None:
        self.settings = ClientSettings.resolve(bootstrap_servers, topic_prefix, partitions, config, security)
        self.topics = Topics(self.settings.topic_prefix)
        self.timeout = timeout
        self.client_id = client_id or f"riskguard-client-{uuid.uuid4().hex[:8]}"
        self._ids = itertools.count()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[Decision]] = {}
        self._assigned: set[int] = set()
        self._assignment = asyncio.Lock()  # the reader's fetch and a change of assignment take turns
        self._woken = asyncio.Event()

    def _kafka_kwargs(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.settings.bootstrap, **self.settings.security.aiokafka_kwargs()}

    async def start(self) -> None:
        """Connect; raises `GuardTopicsMissing` when the deployment's topics are not there as configured."""
        if self._producer is not None:
            return
        await self._check_topics()
        kwargs = self._kafka_kwargs()
        producer = AIOKafkaProducer(
            client_id=self.client_id, acks="all", enable_idempotence=True, linger_ms=0, **kwargs
        )
        consumer = AIOKafkaConsumer(
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            isolation_level="read_committed",
            **kwargs,
        )
        await producer.start()
        try:
            await consumer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer, self._consumer = producer, consumer
        self._reader = asyncio.create_task(self._read(), name="riskguard-client-reader")
        log.info(
            "guard_client_started",
            bootstrap=self.settings.bootstrap,
            prefix=self.settings.topic_prefix,
            partitions=self.settings.partitions,
            security=self.settings.security.describe(),
        )

    async def stop(self) -> None:
        """Disconnect; calls still waiting get their fail-closed answer."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._assigned.clear()
        producer, consumer = self._producer, self._consumer
        self._producer = self._consumer = None
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> GuardClient:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _check_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**self._kafka_kwargs())
        await admin.start()
        try:
            wanted = [self.topics.name(n) for n in ("signals", "fills", "equity", "decisions", "halts")]
            for _ in range(10):  # a topic created a moment ago may not be in every broker's metadata yet
                existing = set(await admin.list_topics())
                missing = [name for name in wanted if name not in existing]
                if not missing:
                    break
                await asyncio.sleep(0.3)
            if missing:
                raise GuardTopicsMissing(
                    f"topics {', '.join(missing)} do not exist on {self.settings.bootstrap}: start `riskguard worker` "
                    "once on this deployment (it creates them) or check the topic prefix"
                )
            described = await admin.describe_topics([self.topics.name("decisions")])
        finally:
            await admin.close()
        counts = {len(entry.get("partitions", ())) for entry in described}
        if counts != {self.settings.partitions}:
            raise GuardTopicsMissing(
                f"{self.topics.name('decisions')} has {sorted(counts)} partitions, the deployment says "
                f"{self.settings.partitions} (kafka.partitions / RISKGUARD_PARTITIONS): decisions would be missed"
            )

    async def _watch(self, partition: int) -> None:
        """Read `partition` of the decisions topic from its current end on (returns once the end is known)."""
        if partition in self._assigned:
            return
        consumer = self._running()[1]
        async with self._assignment:
            if partition in self._assigned:
                return
            topic = self.topics.name("decisions")
            kept = {TopicPartition(topic, p): await consumer.position(TopicPartition(topic, p)) for p in self._assigned}
            added = TopicPartition(topic, partition)
            consumer.assign([*kept, added])
            for tp, offset in kept.items():
                consumer.seek(tp, offset)  # assign() forgets positions: go on where we were
            await consumer.seek_to_end(added)
            await consumer.position(added)
            self._assigned.add(partition)
        self._woken.set()

    def _running(self) -> tuple[AIOKafkaProducer, AIOKafkaConsumer]:
        if self._producer is None or self._consumer is None:
            raise RuntimeError("GuardClient is not started: `await client.start()` or `async with GuardClient()`")
        return self._producer, self._consumer

    async def _read(self) -> None:
        consumer = self._running()[1]
        while True:
            if not self._assigned:
                await self._woken.wait()
                self._woken.clear()
                continue
            try:
                async with self._assignment:
                    batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            except Exception as exc:  # a broker outage: waiting calls fail closed at their timeout; retry
                log.warning("guard_client_read_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(0.5)
                continue
            for records in batches.values():
                for record in records:
                    self._resolve(record.value)

    def _resolve(self, raw: bytes | None) -> None:
        if not raw or not self._pending:
            return
        try:
            decision = matching_decision(raw, self._pending)
        except ValueError as exc:  # a record that is not a Decision: not ours to answer with
            log.warning("guard_client_unreadable_decision", error=str(exc)[:200])
            return
        if decision is None:
            return
        future = self._pending.pop(decision.decision_id, None)
        if future is not None and not future.done():
            future.set_result(decision)

    async def check(self, signal: Signal | Mapping[str, Any], timeout: float | None = None) -> Decision:
        """Send `signal` and return the guard's decision on it; after `timeout` s, `fail_closed(signal)`."""
        sig = signal if isinstance(signal, Signal) else Signal.model_validate(signal)
        limit = self.timeout if timeout is None else timeout
        producer = self._running()[0]
        wanted = expected_decision_id(sig)
        future = self._pending.get(wanted)
        owner = future is None
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[wanted] = future
        began = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                if owner:
                    partition = decision_partition(sig.account, self.settings.partitions)
                    await self._watch(partition)  # the end of the partition before the signal exists
                    value = orjson.dumps(sig.model_dump(mode="json", exclude_none=True))
                    await producer.send(
                        self.topics.name("signals"), value=value, key=sig.account.encode(), partition=partition
                    )
                return await asyncio.shield(future)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and self._producer is not None and not future.cancelled():
                raise  # the caller was cancelled, not the client stopped
            log.warning(
                "guard_timeout",
                account=sig.account,
                symbol=sig.symbol,
                signal_id=sig.signal_id,
                waited_s=round(time.monotonic() - began, 3),
            )
            return fail_closed(sig, limit)
        finally:
            if owner and self._pending.get(wanted) is future and not future.done():
                del self._pending[wanted]

    async def evaluate_trading_decision(
        self,
        account: str,
        symbol: str,
        price: float,
        current_shares: float,
        signal_target_notional: float,
        timeout: float | None = None,
    ) -> Decision:
        """Seed 001's integration call: the decision for a target notional of `symbol` at `price`.

        The guard sizes against its own projected position (fills + pending decisions, SPEC §6); a
        `current_shares` that differs from the filled quantity the guard used is logged as
        `position_mismatch` (your books and the guard's disagree: a fill was not reported).
        """
        signal = target_signal(
            account,
            symbol,
            price,
            signal_target_notional,
            int(time.time() * 1000),
            f"{self.client_id}-{next(self._ids)}",
        )
        decision = await self.check(signal, timeout)
        guard_filled = decision.facts.get("filled_qty")
        if isinstance(guard_filled, int | float) and abs(guard_filled - current_shares) > 1e-9:
            log.warning(
                "position_mismatch",
                account=account,
                symbol=symbol,
                current_shares=current_shares,
                guard_filled_qty=guard_filled,
                decision_id=decision.decision_id,
            )
        return decision

    async def send_fill(self, fill: Fill) -> None:
        """Report an execution on the fills topic (carry the `decision_id` it executes)."""
        await self._send("fills", fill.account, fill)

    async def send_equity(self, equity: Equity) -> None:
        """Report an account's marked equity on the equity topic."""
        await self._send("equity", equity.account, equity)

    async def _send(self, logical: str, account: str, value: BaseModel) -> None:
        producer = self._running()[0]
        body = orjson.dumps(value.model_dump(mode="json", exclude_none=True))
        partition = decision_partition(account, self.settings.partitions)
        await producer.send_and_wait(self.topics.name(logical), value=body, key=account.encode(), partition=partition)

    async def stream(self, accounts: Iterable[str], from_beginning: bool = False) -> AsyncIterator[Decision | Halt]:
        """The decisions and halts of `accounts` as the guard publishes them (from now, or from the beginning).

        Its own consumer reads only those accounts' partitions (read_committed); records of other
        accounts sharing a partition are skipped. Stop by breaking out of the loop.
        """
        wanted = set(accounts)
        if not wanted:
            return
        names: dict[str, type[Decision] | type[Halt]] = {
            self.topics.name("decisions"): Decision,
            self.topics.name("halts"): Halt,
        }
        parts = sorted({decision_partition(a, self.settings.partitions) for a in wanted})
        consumer = AIOKafkaConsumer(
            client_id=f"{self.client_id}-stream", enable_auto_commit=False, isolation_level="read_committed",
            **self._kafka_kwargs(),
        )  # fmt: skip
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for topic in names for p in parts]
            consumer.assign(tps)
            if from_beginning:
                await consumer.seek_to_beginning(*tps)
            else:
                await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for tp, records in batches.items():
                    model = names[tp.topic]
                    for record in records:
                        if record.key is None or record.key.decode(errors="replace") not in wanted:
                            continue
                        yield model.model_validate(orjson.loads(record.value or b"null"))
        finally:
            await consumer.stop()


class SyncGuardClient:
    """`GuardClient` for scripts: the same calls, blocking, on an event loop in a background thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="riskguard-client", daemon=True)
        self._thread.start()
        try:
            self.client: GuardClient = self._call(self._make(args, kwargs))
        except BaseException:
            self._close_loop()
            raise

    @staticmethod
    async def _make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> GuardClient:
        return GuardClient(*args, **kwargs)  # inside the loop that will run it

    def _call(self, coro: Awaitable[T]) -> T:
        async def run() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def start(self) -> SyncGuardClient:
        self._call(self.client.start())
        return self

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self.client.stop())
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> SyncGuardClient:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def check(self, signal: Signal | Mapping[str, Any], timeout: float | None = None) -> Decision:
        return self._call(self.client.check(signal, timeout))

    def evaluate_trading_decision(
        self,
        account: str,
        symbol: str,
        price: float,
        current_shares: float,
        signal_target_notional: float,
        timeout: float | None = None,
    ) -> Decision:
        return self._call(
            self.client.evaluate_trading_decision(
                account, symbol, price, current_shares, signal_target_notional, timeout
            )
        )

    def send_fill(self, fill: Fill) -> None:
        self._call(self.client.send_fill(fill))

    def send_equity(self, equity: Equity) -> None:
        self._call(self.client.send_equity(equity))
