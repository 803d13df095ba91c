"""Level state snapshots: an engine rebuilt from JSON snapshots continues exactly like the original."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import orjson
import pytest

from schemas.config import Config, config_from_dict, load_config
from schemas.inputs import Bar
from streams.core.engine import Engine
from streams.core.items import PARTITION_KEY, item_for
from streams.core.levels.market.snapshot import CLUSTERS_KEY, ROW_PREFIX, dump_market, load_market, row_key
from streams.core.levels.market.stage import MarketStage
from streams.core.snapshot import DUMPERS, LOADERS
from streams.gen import GenParams, generate
from streams.tape import decode_line, encode

CONFIG = load_config(None)


def _json(value: Any) -> bytes:
    """A dumped value as the worker stores it: `bytes` are JSON already."""
    return value if isinstance(value, bytes) else orjson.dumps(value)


def _plain(dumped: dict[str, Any]) -> dict[str, Any]:
    return {key: orjson.loads(_json(value)) for key, value in dumped.items()}


def _digest(engine: Engine) -> str:
    data = {stage.name: _plain(DUMPERS[stage.name](stage)) for stage in engine.stages}
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _restore(engine: Engine, config: Config = CONFIG) -> Engine:
    fresh = Engine(config)
    for old, new in zip(engine.stages, fresh.stages, strict=True):
        dumped = DUMPERS[old.name](old)
        for key in sorted(dumped):  # the worker's order: `@` before `@clusters`
            LOADERS[new.name](new, key, orjson.loads(_json(dumped[key])))
    return fresh


def test_engine_when_restored_from_snapshots_mid_tape_then_same_outputs_as_uninterrupted() -> None:
    lines = list(generate(GenParams(symbols=25, accounts=4, days=2, seed=3), CONFIG))
    events = [decode_line(line.strip()) for line in lines]
    cut = len(events) // 2

    straight = Engine(CONFIG)
    expected = [encode(o) for topic, _, value in events for o in straight.process(topic, value)]

    first = Engine(CONFIG)
    outputs = [encode(o) for topic, _, value in events[:cut] for o in first.process(topic, value)]
    second = _restore(first)
    assert _digest(second) == _digest(first)
    outputs += [encode(o) for topic, _, value in events[cut:] for o in second.process(topic, value)]

    assert outputs == expected
    assert any(b'"decisions"' in line for line in expected)


# Daily scheduled runs at noon New York, the benchmark classifier on S000 (minute bars), every budget
# trigger on and auto_rebalance: all of Level 1's, Level 2's and Level 3's new state is in play mid-tape.
BUDGET = config_from_dict(
    {
        "rebalance": {
            "enabled": True,
            "frequency": "custom_days",
            "every_days": 1,
            "time_local": "12:00",
            "timezone": "America/New_York",
            "min_trade_value": 100,
        },
        "budget": {
            "enabled": True,
            "benchmark": "S000",
            "auto_rebalance": True,
            "classifier": {
                "window": 30,
                "min_periods": 10,
                "periods_per_year": 98_280,
                "bear_vol": 0.25,
                "crisis_vol": 0.5,
                "bear_drawdown": 0.01,
                "crisis_drawdown": 0.03,
            },
            "rebalancing_triggers": {"correlation_spike": 0.3, "drift_threshold": 0.05},
        },
    }
)


def test_engine_when_budget_and_schedule_state_restored_mid_tape_then_same_outputs_as_uninterrupted() -> None:
    lines = list(generate(GenParams(symbols=12, accounts=3, days=2, seed=3), BUDGET))
    events = [decode_line(line.strip()) for line in lines]
    cut = len(events) // 2 + 7

    straight = Engine(BUDGET)
    expected = [o for topic, _, value in events for o in straight.process(topic, value)]

    first = Engine(BUDGET)
    outputs = [encode(o) for topic, _, value in events[:cut] for o in first.process(topic, value)]
    second = _restore(first, BUDGET)
    assert _digest(second) == _digest(first)
    assert second.account.rebalance_at == first.account.rebalance_at and second.account.budgets == first.account.budgets
    outputs += [encode(o) for topic, _, value in events[cut:] for o in second.process(topic, value)]

    assert outputs == [encode(o) for o in expected]
    kinds = Counter(getattr(o.value, "trigger", None) or getattr(o.value, "kind", None) for o in expected)
    assert kinds["schedule"] >= 4 and kinds["budget"] > 0 and kinds["market_regime"] > 0
    assert kinds["budget_recommendation"] > 0 and kinds["correlation_spike"] > 0


def _bar(symbol: str, ts: int, close: float) -> Bar:
    return Bar(symbol=symbol, ts=ts, open=close, high=close * 1.01, low=close * 0.99, close=close, volume=1000.0)


def _feed(stage: MarketStage, bar: Bar) -> None:
    stage.process(item_for("bars", bar))


def _market(timestamps: int, symbols: int = 6, pending: int = 3) -> MarketStage:
    """A Level-2 stage after `timestamps` completed bar timestamps and `pending` bars of the next one."""
    stage = MarketStage(CONFIG)
    for t in range(timestamps + 1):
        for k in range(symbols if t < timestamps else pending):
            close = 100.0 + k + ((t * (k + 3)) % 7) * 0.37
            _feed(stage, _bar(f"S{k:02d}", 60_000 * (t + 1), close))
    return stage


def _window_keys(dumped: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in dumped.items() if key == CLUSTERS_KEY or key.startswith(ROW_PREFIX)}


def test_market_dump_when_no_new_bar_timestamp_then_window_bytes_identical_objects() -> None:
    stage = _market(timestamps=25)
    first = dump_market(stage)
    revision = stage.state.clusters.revision
    _feed(stage, _bar("S05", 60_000 * 26, 105.5))  # one more bar of the pending timestamp
    second = dump_market(stage)

    assert first.keys() == second.keys()
    assert all(second[key] is value for key, value in _window_keys(first).items())
    assert stage.state.clusters.revision == revision
    assert second[PARTITION_KEY] != first[PARTITION_KEY]  # the pending bar is in `@`


def test_market_dump_when_bar_completes_a_timestamp_then_head_and_one_row_change() -> None:
    stage = _market(timestamps=25)
    first = _window_keys(dump_market(stage))
    revision = stage.state.clusters.revision
    _feed(stage, _bar("S00", 60_000 * 27, 101.0))  # a later timestamp completes the pending one
    second = _window_keys(dump_market(stage))

    clusters = stage.state.clusters
    kept, version = clusters.params.kept, clusters.current.version
    assert clusters.revision == revision + 1 and version == 26
    changed = {key for key in second if second[key] != first.get(key)}
    assert changed == {CLUSTERS_KEY, row_key(26, kept)}  # 26 rows so far (fewer than kept): a new slot
    row = orjson.loads(second[row_key(26, kept)])
    assert row["row"] == 26
    assert row["returns"] == [None if x != x else x for x in clusters.returns(1)[0].tolist()]
    head = orjson.loads(second[CLUSTERS_KEY])
    assert head["rows"] == 26 and head["version"] == 26 and head["symbols"] == list(clusters.symbols)


def test_market_dump_when_the_window_is_full_then_a_new_row_takes_the_oldest_rows_slot() -> None:
    stage = _market(timestamps=60)
    clusters = stage.state.clusters
    kept = clusters.params.kept
    assert kept < 60
    before = _window_keys(dump_market(stage))
    _feed(stage, _bar("S00", 60_000 * 62, 101.0))
    after = _window_keys(dump_market(stage))

    assert len([key for key in after if key.startswith(ROW_PREFIX)]) == kept
    assert {key for key in after if after[key] != before[key]} == {CLUSTERS_KEY, row_key(61, kept)}
    assert row_key(61, kept) == row_key(61 - kept, kept)  # the row that left the window


def test_market_dump_when_a_new_symbol_comes_then_earlier_rows_restore_with_its_column_empty() -> None:
    stage = _market(timestamps=25)
    for t in (26, 27):
        for k in range(7):  # S06 is new at timestamp 26
            _feed(stage, _bar(f"S{k:02d}", 60_000 * (t + 1), 100.0 + k + t * 0.1))
    dumped = dump_market(stage)
    fresh = MarketStage(CONFIG)
    for key, value in sorted(dumped.items()):
        load_market(fresh, key, orjson.loads(_json(value)))

    assert fresh.state.clusters.to_dict() == stage.state.clusters.to_dict()
    assert fresh.state.clusters.current == stage.state.clusters.current


@pytest.mark.parametrize("order", ["sorted", "rows first", "reversed"])
def test_market_load_when_keys_in_any_order_then_restores_same_state(order: str) -> None:
    stage = _market(timestamps=25)
    dumped = dump_market(stage)
    keys = sorted(dumped)
    if order == "rows first":
        keys = [k for k in keys if k.startswith(ROW_PREFIX)] + [k for k in keys if not k.startswith(ROW_PREFIX)]
    elif order == "reversed":
        keys.reverse()
    fresh = MarketStage(CONFIG)
    for key in keys:
        load_market(fresh, key, orjson.loads(_json(dumped[key])))

    assert _plain(dump_market(fresh)) == _plain(dumped)
    assert fresh.state.clusters.to_dict() == stage.state.clusters.to_dict()
    assert fresh.state.clusters.current == stage.state.clusters.current


def test_market_load_when_the_window_under_one_key_then_restores_same_state() -> None:
    stage = _market(timestamps=25)
    new = _plain(dump_market(stage))
    fresh = MarketStage(CONFIG)
    load_market(fresh, PARTITION_KEY, new[PARTITION_KEY])
    load_market(fresh, CLUSTERS_KEY, orjson.loads(orjson.dumps(stage.state.clusters.window())))

    assert _plain(dump_market(fresh)) == new
    assert fresh.state.clusters.current == stage.state.clusters.current


def test_market_load_when_old_single_key_format_then_restores_same_state() -> None:
    stage = _market(timestamps=25)
    new = _plain(dump_market(stage))
    old = {key: value for key, value in new[PARTITION_KEY].items() if key != "cluster_pending"}
    old["clusters"] = stage.state.clusters.to_dict()
    fresh = MarketStage(CONFIG)
    load_market(fresh, PARTITION_KEY, orjson.loads(orjson.dumps(old)))

    assert _plain(dump_market(fresh)) == new
    assert fresh.state.clusters.current == stage.state.clusters.current


def test_market_when_restored_from_split_keys_then_next_maps_identical() -> None:
    stage = _market(timestamps=25)
    fresh = MarketStage(CONFIG)
    for key, value in sorted(dump_market(stage).items()):
        load_market(fresh, key, orjson.loads(_json(value)))
    for t in range(26, 30):
        for k in range(6):
            close = 100.0 + k + ((t * (k + 5)) % 11) * 0.41
            _feed(stage, _bar(f"S{k:02d}", 60_000 * (t + 1), close))
            _feed(fresh, _bar(f"S{k:02d}", 60_000 * (t + 1), close))

    assert fresh.state.clusters.current == stage.state.clusters.current
    assert _window_keys(dump_market(fresh)) == _window_keys(dump_market(stage))


def test_load_account_when_written_with_the_old_level_1_quota_then_restores_without_it() -> None:
    # Level-1 snapshots written before the entry quota lived only at Level 4 carry `quota_used`.
    lines = list(generate(GenParams(symbols=5, accounts=2, days=1, seed=3), CONFIG))
    engine = Engine(CONFIG)
    for topic, _, value in (decode_line(line.strip()) for line in lines):
        engine.process(topic, value)
    dumped = DUMPERS["account"](engine.account)
    old = {key: {**value, "quota_used": 0.0} if key != PARTITION_KEY else value for key, value in dumped.items()}

    fresh = Engine(CONFIG)
    for key in sorted(old):
        LOADERS["account"](fresh.account, key, orjson.loads(orjson.dumps(old[key])))

    assert _plain(DUMPERS["account"](fresh.account)) == _plain(dumped)
