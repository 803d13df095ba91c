"""Every touch of a private Faust, mode or aiokafka internal, fenced in one module and checked at start.

The worker relies on faust-streaming and aiokafka at the exact versions pinned in `pyproject.toml`
(`FAUST_VERSION`, `AIOKAFKA_VERSION`). `check()` runs before the app is built and fails with a clear
message when a version differs or an attribute this module touches is missing, instead of letting a
renamed internal surface as a lost message later. What remains and why: docs/reliability.md
("Faust internals the worker touches").

- `_current_event`: Faust picks a table's store and changelog partition from the event being
  processed (a ContextVar); the worker writes its tables after a batch, outside Faust's own
  iteration, so it sets it. No public setter exists.
- The commit offsets (`CommitGate`): Faust commits from its acks and skips one unacked offset at the
  head (`_new_offset`), so the gate replaces `_new_offset` for the topics it manages, clears the ack
  bookkeeping (`_acked`, `_acked_index`, `_gap`) it no longer needs, and resets the fetcher's read
  mark (`_read_offset`) at the seek so records fetched again are kept. `seek_to_committed` is
  public but wrapped, to learn where each partition was sought to.
- `AIOKafkaConsumerThread._create_worker_consumer` (wrapped): Faust builds its aiokafka consumer with
  `fetch_max_wait_ms=1500`, not a setting. aiokafka sends one fetch at a time to a broker, naming only
  the partitions whose records were all taken; when the agents lag by more than aiokafka's backoff
  (100 ms), a fetch went out for the idle partitions only (`market.bars` between bar times) and the
  broker held it up to 1.5 s while `risk.sequenced` filled: the chain got nothing for ~0.6 s at a time
  and fell behind for good (docs/performance.md, session 12). The worker's `fetch_max_wait_ms` bounds it.
- `Store._db_for_partition` (RocksDB): the level tables write a value straight to its partition's
  database (`put_local`), without `Store._set`'s lookup of the current event and its key index.
- `Producer._settings_extra` (wrapped): Faust asks aiokafka for an idempotent producer only under
  exactly-once. At least once, a batch in flight when the broker dies is sent again by the producer
  once the broker is back, and whatever the broker had already written is then on the topic twice (seen
  as 11 repeated decision ids in the broker-restart test). No setting turns idempotence on.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

import faust.streams
from faust.stores.rocksdb import Store as RocksDBStore
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

FAUST_VERSION = "0.15.3"
AIOKAFKA_VERSION = "0.14.0"
CONSUMER_ATTRIBUTES = ("_new_offset", "_acked", "_acked_index", "_gap", "_read_offset", "seek_to_committed")


class IncompatibleFaust(RuntimeError):
    """The installed Faust or aiokafka is not the one whose internals the worker was checked against."""


def check() -> None:
    """Fail fast when the pinned versions or the module-level internals are not there."""
    for package, wanted in (("faust-streaming", FAUST_VERSION), ("aiokafka", AIOKAFKA_VERSION)):
        found = metadata.version(package)
        if found != wanted:
            raise IncompatibleFaust(
                f"{package} {found} is installed, the worker needs exactly {wanted} "
                f"(it touches internals; see streams/worker/faust_compat.py): pip install '{package}=={wanted}'"
            )
    if not hasattr(faust.streams, "_current_event"):
        raise IncompatibleFaust("faust.streams._current_event is missing: the tables cannot pick their partition")
    if not hasattr(RocksDBStore, "_db_for_partition"):
        raise IncompatibleFaust("Faust's RocksDB store has no _db_for_partition: the tables cannot be written")
    if not hasattr(AIOKafkaConsumerThread, "_create_worker_consumer"):
        raise IncompatibleFaust("Faust's consumer thread has no _create_worker_consumer: the fetch wait cannot be set")


_fetch_waits: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()  # app -> fetch_max_wait_ms


def _with_fetch_wait(create: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        wait = _fetch_waits.get(self.app)
        if wait is not None:
            if not hasattr(consumer, "_fetch_max_wait_ms"):
                raise IncompatibleFaust("the aiokafka consumer has no _fetch_max_wait_ms: the fetch wait cannot be set")
            consumer._fetch_max_wait_ms = wait  # read when the consumer starts its fetcher
        return consumer

    create_worker_consumer.riskguard_fetch_wait = True  # type: ignore[attr-defined]
    return create_worker_consumer


def fetch_wait(app: Any, wait_ms: int) -> None:
    """The broker holds a fetch of `app`'s Faust consumer at most `wait_ms` (see the module docstring).

    Called before the app starts: Faust builds its aiokafka consumer when the consumer thread starts.
    """
    create = AIOKafkaConsumerThread._create_worker_consumer
    if not getattr(create, "riskguard_fetch_wait", False):
        AIOKafkaConsumerThread._create_worker_consumer = _with_fetch_wait(create)  # type: ignore[method-assign,assignment]
    _fetch_waits[app] = wait_ms


def idempotent_producer(app: Any) -> None:
    """Make the app's producer idempotent with acks=all under every guarantee (see the module docstring).

    Called before the app starts: the aiokafka producer is built from these settings at start.
    """
    producer = app.producer
    original = getattr(producer, "_settings_extra", None)
    if original is None:
        raise IncompatibleFaust("the Faust producer has no _settings_extra: it cannot be made idempotent")

    def settings_extra() -> dict[str, Any]:
        return {**original(), "acks": "all", "enable_idempotence": True}

    producer._settings_extra = settings_extra


def check_consumer(consumer: Any) -> None:
    """Fail fast when the Faust consumer lacks an attribute the commit gate touches."""
    missing = [name for name in CONSUMER_ATTRIBUTES if not hasattr(consumer, name)]
    if missing:
        raise IncompatibleFaust(f"the Faust consumer has no {', '.join(missing)}: the commit gate cannot work")


def put_local(store: Any, partition: int, key: str, raw_key: bytes, value: bytes) -> None:
    """Write `value` under `key` (encoded: `raw_key`) to table partition `partition` of `store`.

    Faust's RocksDB store writes through `_set`, which finds the partition from the current event and
    keeps an LRU index of keys to partitions (a lock and a dict write per key) and encodes the key the
    changelog record already has: 7.8-8.3 -> 5.4 us a put in process. The worker knows the partition,
    and reads its tables only by scanning them. The memory store (tests) takes its public mapping.
    """
    db_for_partition = getattr(store, "_db_for_partition", None)
    if db_for_partition is None:
        store[key] = value
        return
    db_for_partition(partition).put(raw_key, value)


def set_current_event(event: Any) -> None:
    """Make `event` the one Faust's tables take their partition from (see the module docstring)."""
    faust.streams._current_event.set(weakref.ref(event))


class ConsumerInternals:
    """The Faust consumer's commit bookkeeping, patched for `CommitGate`."""

    def __init__(
        self,
        consumer: Any,
        new_offset: Callable[[Any], int | None],
        seek_to_committed: Callable[[], Awaitable[Any]],
    ) -> None:
        check_consumer(consumer)
        self.consumer = consumer
        self.original_new_offset: Callable[[Any], int | None] = consumer._new_offset
        self.original_seek_to_committed: Callable[[], Awaitable[Any]] = consumer.seek_to_committed
        consumer._new_offset = new_offset
        consumer.seek_to_committed = seek_to_committed

    def offer_for_commit(self, tp: Any) -> None:
        """Faust offers only partitions with an ack entry for commit."""
        self.consumer._acked.setdefault(tp, [])

    def forget_acks(self, tp: Any) -> None:
        """Faust's acks say nothing for a gated partition; keep them from piling up."""
        self.consumer._acked[tp].clear()
        self.consumer._acked_index[tp].clear()
        self.consumer._gap.pop(tp, None)

    def reset_read_marks(self, committed: dict[Any, Any]) -> None:
        """The fetcher drops records below its read mark: reset it to where each partition was sought."""
        read = self.consumer._read_offset
        for tp, offset in committed.items():
            read[tp] = offset if offset is not None and offset >= 0 else None
