"""What a level reports touched covers what it changed: the worker stores exactly those keys (SPEC §8).

The worker writes, after each batch, only the table keys each level's `touched(item, forwarded)`
names: accounts, and `@`, which Levels 3 and 4 name only for the items that may change it. A change
under a key not named would never reach the table, and a restart would lose it. This runs generated
sessions (default and demo configs: cadence, budget, rebalances) item by item through the chain and
checks, after every item, that every key whose snapshot changed was reported touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.config import load_config
from streams.core.engine import Engine
from streams.core.items import item_for
from streams.core.levels.market.snapshot import CLUSTERS_KEY  # written with `@`, whenever `@` is
from streams.core.snapshot import DUMPERS
from streams.gen import GenParams, generate
from streams.tape import decode_line

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = {"default": load_config(None), "demo": load_config(ROOT / "deploy" / "profiles" / "demo.yaml")}


def _snapshot(stage: Any) -> dict[str, bytes]:
    return {
        key: value if isinstance(value, bytes) else orjson.dumps(value)
        for key, value in DUMPERS[stage.name](stage).items()
    }


@pytest.mark.parametrize(("config", "seed"), [("default", 3), ("demo", 7), ("demo", 11)])
def test_every_item_when_run_then_each_level_reported_every_key_whose_snapshot_changed(config: str, seed: int) -> None:
    cfg = CONFIGS[config]
    engine = Engine(cfg)
    names = [stage.name for stage in engine.stages]
    before = {stage.name: _snapshot(stage) for stage in engine.stages}
    partition_skipped = 0
    for line in generate(GenParams(symbols=12, accounts=3, days=2, seed=seed), cfg):
        topic, _, value = decode_line(line.strip())
        touched: dict[str, set[str]] = {}
        engine.chain.run([item_for(topic, value)], 0, touched)
        for stage in engine.stages:
            after = _snapshot(stage)
            changed = {k for k in after.keys() | before[stage.name].keys() if after.get(k) != before[stage.name].get(k)}
            missed = {"@" if k.startswith(CLUSTERS_KEY) else k for k in changed} - touched.get(stage.name, set())
            assert not missed, f"{stage.name} changed {sorted(missed)} on a {topic} item without reporting them"
            partition_skipped += "@" not in touched.get(stage.name, set())
            before[stage.name] = after
    assert names == ["market", "account", "symbol", "portfolio"]
    assert partition_skipped > 0  # the levels do leave `@` out where it cannot have changed
