"""A level table's batch writes: the local store and the changelog record, as Faust itself would write them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust
import pytest

from streams.worker.commit import durable_table


class _Producer:
    """Stands in for the app's producer: records each send, acks it with an increasing offset."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    async def maybe_start(self) -> None:
        return None

    async def send(self, topic: str, key: Any, value: Any, partition: Any, timestamp: Any, headers: Any) -> Any:
        self.sent.append((topic, key, value, partition))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(type("Meta", (), {"offset": len(self.sent) - 1})())
        return done


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_put_when_values_are_written_then_local_store_and_changelog_records_as_faust_encodes_them(
    tmp_path: Path, store: str
) -> None:
    app = faust.App(
        "durable-table-test",
        broker="kafka://127.0.0.1:1",
        store=store,
        datadir=str(tmp_path),
        key_serializer="raw",  # as the worker's app (`build_app`)
        value_serializer="raw",
    )
    table = durable_table(app, "level-symbol")
    producer = app.producer = _Producer()
    counted: list[tuple[Any, str]] = []

    class _Sensor(faust.Sensor):
        def on_table_set(self, table: Any, key: Any, value: Any) -> None:
            counted.append((table, key))

    app.sensors.add(_Sensor())
    writes = [(2, "2/A001|pos|AAPL", b'\x00\x01{"qty":5}'), (1, "1/B\u00e9|signals|127", b"[]"), (3, "3/#applied", b"")]

    async def write() -> list[int]:
        sent = [await table.put(producer, partition, key, value) for partition, key, value in writes]
        return [int((await future).offset) for future in sent]

    assert asyncio.run(write()) == [0, 1, 2]
    changelog = table.changelog_topic.get_topic_name()
    assert changelog.endswith("level-symbol-changelog")
    expected = []
    for partition, key, value in writes:
        if store == "rocksdb://":  # in the database of its table partition, keyed as Faust's store keys it
            assert table.data._dbs[partition].get(table.data._encode_key(key)) == value
        else:
            assert table.data[key] == value
        faust_key, _ = table.changelog_topic.prepare_key(key, table.key_serializer)  # what `Table.__setitem__` sends
        faust_value, _ = table.changelog_topic.prepare_value(value, table.value_serializer)
        expected.append((changelog, faust_key, faust_value, partition))
    assert producer.sent == expected
    assert counted == [(table, key) for _, key, _ in writes]  # the table-set metric counts them as before
    assert producer.sent[0][1] == b'"2/A001|pos|AAPL"'  # JSON: what the store's restore decodes
