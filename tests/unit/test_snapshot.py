"""Level state snapshots: an engine rebuilt from JSON snapshots continues exactly like the original."""

from __future__ import annotations

import hashlib
from collections import Counter

import orjson

from schemas.config import Config, config_from_dict, load_config
from streams.core.engine import Engine
from streams.core.snapshot import DUMPERS, LOADERS
from streams.gen import GenParams, generate
from streams.tape import decode_line, encode

CONFIG = load_config(None)


def _digest(engine: Engine) -> str:
    data = {stage.name: DUMPERS[stage.name](stage) for stage in engine.stages}
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _restore(engine: Engine, config: Config = CONFIG) -> Engine:
    fresh = Engine(config)
    for old, new in zip(engine.stages, fresh.stages, strict=True):
        for key, value in DUMPERS[old.name](old).items():
            LOADERS[new.name](new, key, orjson.loads(orjson.dumps(value)))
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
