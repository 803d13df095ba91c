"""Level 3's duplicate-id memory is bounded (issue 16): duplicates are still never applied twice."""

from __future__ import annotations

import pytest

from schemas.inputs import Signal
from streams.core.items import Item
from streams.core.levels.symbol import stage
from streams.core.levels.symbol.snapshot import dump_symbol, load_symbol
from streams.core.levels.symbol.stage import SymbolStage
from streams.testing import TapeBuilder

DAY = 86_400_000
T0 = 1_704_205_800_000  # 2024-01-02 14:30 UTC


def _session() -> TapeBuilder:
    return TapeBuilder().equity("a", T0, 100_000).flat_bar("X", T0, 10.0)


def test_signal_ids_when_redelivered_at_or_before_the_latest_instant_then_dropped() -> None:
    tape = _session()
    tape.signal("a", "X", T0 + 1000, "s1", target_notional=1_000)
    tape.signal("a", "X", T0 + 2000, "s2", target_notional=2_000)
    tape.signal("a", "X", T0 + 2000, "s3", target_notional=3_000)
    tape.signal("a", "X", T0 + 1000, "s1", target_notional=1_000)  # redelivered, before the latest instant
    tape.signal("a", "X", T0 + 2000, "s3", target_notional=3_000)  # redelivered, at the latest instant

    result = tape.run()

    book = result.engine.symbol.books["a"]
    assert set(book.seen_signals) == {"s1", "s2", "s3"}
    assert [d.source_id for d in result.decisions] == ["s1", "s2", "s3"]
    assert result.engine.symbol.stats["duplicates"] == 2
    assert result.engine.symbol.stats["out_of_order"] == 0


def test_signal_id_when_reused_at_a_later_instant_then_refused_so_no_second_decision_shares_its_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stage, "MAX_SIGNAL_IDS", 4)
    monkeypatch.setattr(stage, "_FILL_ID_SLACK", 2)
    tape = _session()
    tape.signal("a", "X", T0 + 1000, "s0", target_notional=1_000)
    tape.signal("a", "X", T0 + 2000, "s0", target_notional=5_000)  # the same id, later: a producer's bug
    for n in range(1, 10):
        tape.signal("a", "X", T0 + 2000 + n * 1000, f"s{n}", target_notional=1_000 + n * 500)

    result = tape.run()

    ids = [d.decision_id for d in result.decisions]
    assert len(ids) == len(set(ids))
    assert result.engine.symbol.stats["duplicates"] == 1
    assert len(result.engine.symbol.books["a"].seen_signals) <= 4 + 2


def test_fill_ids_when_more_than_kept_then_oldest_forgotten_and_none_applied_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stage, "MAX_FILL_IDS", 4)
    monkeypatch.setattr(stage, "_FILL_ID_SLACK", 2)
    tape = _session()
    for day in range(12):
        tape.fill("a", "X", "BUY", 1, 10.0, T0 + day * DAY, f"f{day}")
    tape.fill("a", "X", "BUY", 1, 10.0, T0 + 11 * DAY, "f11")  # redelivered: its id is kept
    tape.fill("a", "X", "BUY", 1, 10.0, T0 + 2 * DAY, "f2")  # redelivered after its id was forgotten
    tape.fill("a", "X", "BUY", 1, 10.0, T0 + 11 * DAY + 1, "f12")  # a new fill after the newest kept

    result = tape.run()

    book = result.engine.symbol.books["a"]
    assert book.filled["X"].qty == 13
    assert result.engine.position("a", "X").qty == 13
    assert result.engine.symbol.stats["duplicates"] == 1
    assert result.engine.symbol.stats["out_of_order"] == 1
    assert len(book.seen_fills) <= 4 + 2
    assert book.fills_horizon is not None and book.fills_horizon >= T0 + 2 * DAY


def test_fill_ids_when_one_fill_has_a_wild_time_then_later_fills_still_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage, "MAX_FILL_IDS", 4)
    monkeypatch.setattr(stage, "_FILL_ID_SLACK", 2)
    tape = _session().fill("a", "X", "BUY", 1, 10.0, "2199-12-31T23:59:59Z", "typo")
    for minute in range(10):
        tape.fill("a", "X", "BUY", 1, 10.0, T0 + minute * 60_000, f"f{minute}")

    result = tape.run()

    assert result.engine.symbol.books["a"].filled["X"].qty == 11
    assert result.engine.symbol.stats["out_of_order"] == 0


def test_snapshot_when_seen_fills_were_a_list_then_every_id_kept() -> None:
    result = _session().fill("a", "X", "BUY", 1, 10.0, T0, "f1").run()
    data = dump_symbol(result.engine.symbol)["a"]
    before_the_bound = {k: v for k, v in data.items() if k != "fills_horizon"}
    fresh = SymbolStage(result.engine.config)

    load_symbol(fresh, "a", {**before_the_bound, "seen_fills": ["f0", "f1"]})

    assert fresh.books["a"].seen_fills == {"f0": -1, "f1": -1}
    assert fresh.books["a"].fills_horizon is None


def _chunks(account: str, kind: str, ids: list[str]) -> set[str]:
    return {stage.seen_key(account, kind, stage.id_chunk(i)) for i in ids}


def test_seen_ids_when_signals_arrive_then_only_their_chunks_are_touched_and_the_book_holds_none() -> None:
    tape = _session()
    for n in range(5):
        tape.signal("a", "X", T0 + 1000 * (n + 1), f"s{n}", target_notional=1_000)
    engine = tape.run().engine
    level = engine.symbol
    assert level.ids_changed == _chunks("a", "signals", [f"s{n}" for n in range(5)])
    level.touched(_signal_item("a", "s4", T0 + 5000), [])  # what the tape changed, reported
    assert level.ids_changed == set()

    new = _signal_item("a", "s-new", T0 + 9000)
    engine.process("signals", new.signal)
    keys = level.touched(new, [])
    dumped = dump_symbol(level, keys)

    chunk = stage.seen_key("a", "signals", stage.id_chunk("s-new"))
    assert keys == {"a", chunk, stage.symbol_key("a", "X")}  # the account, the id's chunk, the signal's symbol
    assert "seen_signals" not in dumped["a"] and "seen_fills" not in dumped["a"]
    assert "s-new" in dumped[chunk]
    assert all(stage.id_chunk(i) == stage.id_chunk("s-new") for i in dumped[chunk])


def _signal_item(account: str, signal_id: str, ts: int) -> Item:
    sig = Signal.model_validate(
        {"signal_id": signal_id, "account": account, "symbol": "X", "ts": ts, "strategy": "t", "target_notional": 1e3}
    )
    return Item("signal", account, sig)


def test_seen_ids_when_stored_in_chunks_and_loaded_in_any_order_then_every_id_comes_back() -> None:
    tape = _session()
    for n in range(40):
        tape.signal("a", "X", T0 + 1000 * (n + 1), f"sig-{n}", target_notional=1_000)
    tape.fill("a", "X", "BUY", 1, 10.0, T0 + 50_000, "f1")
    result = tape.run()
    level = result.engine.symbol
    dumped = dump_symbol(level)
    fresh = SymbolStage(result.engine.config)

    for key in sorted(dumped, reverse=True):  # the chunks before the account's own key
        load_symbol(fresh, key, dumped[key])

    assert fresh.books["a"].seen_signals == level.books["a"].seen_signals
    assert fresh.books["a"].seen_fills == {"f1": T0 + 50_000}
    assert fresh.ids_changed == set()  # nothing to write again


def test_seen_ids_when_a_snapshot_holds_them_inline_then_every_chunk_is_written_at_the_next_store() -> None:
    result = _session().signal("a", "X", T0 + 1000, "s1", target_notional=1_000).run()
    own = dump_symbol(result.engine.symbol)["a"]
    fresh = SymbolStage(result.engine.config)
    legacy_ids = {f"old-{n}": T0 for n in range(100)}

    load_symbol(fresh, "a", {**own, "seen_signals": legacy_ids, "seen_fills": {}})

    assert fresh.books["a"].seen_signals == legacy_ids
    all_chunks = stage.seen_keys("a", "signals") | stage.seen_keys("a", "fills")
    assert fresh.ids_changed == all_chunks
    dumped = dump_symbol(fresh, fresh.ids_changed)
    stored = {i: ts for key in stage.seen_keys("a", "signals") for i, ts in dumped[key].items()}
    assert stored == legacy_ids
    assert all(dumped[key] == {} for key in stage.seen_keys("a", "fills"))  # emptied chunks are overwritten


def test_seen_ids_when_the_oldest_are_forgotten_then_every_chunk_of_the_kind_is_touched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stage, "MAX_SIGNAL_IDS", 4)
    monkeypatch.setattr(stage, "_FILL_ID_SLACK", 2)
    tape = _session()
    for n in range(7):
        tape.signal("a", "X", T0 + 1000 * (n + 1), f"s{n}", target_notional=1_000)

    level = tape.run().engine.symbol

    assert stage.seen_keys("a", "signals") <= level.ids_changed
    dumped = dump_symbol(level, stage.seen_keys("a", "signals"))
    assert {i for key in stage.seen_keys("a", "signals") for i in dumped[key]} == set(level.books["a"].seen_signals)


def test_seen_ids_when_ids_come_after_the_chunks_were_read_then_each_chunk_still_holds_exactly_its_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stage, "MAX_SIGNAL_IDS", 30)
    monkeypatch.setattr(stage, "_FILL_ID_SLACK", 5)
    engine = _session().run().engine
    level = engine.symbol
    for n in range(80):  # forgetting happens twice on the way
        item = _signal_item("a", f"later-{n}", T0 + 1000 * (n + 1))
        engine.process("signals", item.signal)
        dumped = dump_symbol(level, stage.seen_keys("a", "signals"))  # reads (and indexes) every chunk
        ids = level.books["a"].seen_signals
        for chunk in range(stage.ID_CHUNKS):
            expected = {i: ts for i, ts in ids.items() if stage.id_chunk(i) == chunk}
            assert dumped[stage.seen_key("a", "signals", chunk)] == expected
