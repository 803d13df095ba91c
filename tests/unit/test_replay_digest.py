"""Replay output is byte-identical to the engine's before the replay speed-ups (issue 16).

The digests were computed on the code as it was before any of them (commit 52ce35a); a change that moves
a single output byte of these tapes (a decision, a halt, a cluster map, a dead letter) fails here. The
tapes are generated, so the generator (which runs the engine for its fills) is pinned too.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import orjson
import pytest
import yaml

from schemas.config import config_from_dict
from streams.core.engine import Engine
from streams.gen import GenParams, generate
from streams.tape import replay
from tests import seed_rules

BUDGET: dict[str, Any] = {
    "budget": {"enabled": True, "auto_rebalance": True},
    "rebalance": {"enabled": True, "targets": {"S001": 0.2, "S002": 0.2}, "budget_pct": 1.0, "min_trade_value": 100},
    "risk": {"factor": {"benchmark": "S000", "beta_window": 40, "min_periods": 10}},
}

# (name, generator parameters, config, digest of the tape, digest of its replay output)
CASES = [
    (
        "default",
        GenParams(symbols=40, accounts=6, days=2, seed=11),
        {},
        "7761f277c80cf95f37b1fa748d59b48daff145c5d65c2181df450db9f6a0f13b",
        "ff982916e74b908989859fb95a768e66672000ef9847b5ad1e0afa06eb433a4a",
    ),
    (
        "budget",
        GenParams(symbols=25, accounts=4, days=2, seed=3),
        BUDGET,
        "70f1a1d78bed211fa78a94e308f6385e978d07ed6532f8750c4b06f0d5fba467",
        "49aa10b17a65e69a03ec9415cc21ba4e21acfd570a051fa8dc884c1a5db98918",
    ),
]
SEED_RULES_OUT = "34f4550bfb053c32bc6f7439aeb426a6dffa87be8309a1139d51ddf35c5efe19"


def _replay(lines: list[bytes], config: dict[str, Any], key: bytes | None = None) -> bytes:
    sink = io.BytesIO()
    replay(Engine(config_from_dict(config), control_key=key), lines, sink)
    return sink.getvalue()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("name", "params", "config", "tape_digest", "out_digest"), CASES, ids=[c[0] for c in CASES])
def test_replay_when_generated_tape_then_output_bytes_as_before(
    name: str, params: GenParams, config: dict[str, Any], tape_digest: str, out_digest: str
) -> None:
    lines = list(generate(params, config_from_dict(config)))

    output = _replay(lines, config)

    assert _digest(b"".join(lines)) == tape_digest
    assert output.count(b"\n") > 0
    assert _digest(output) == out_digest


def test_replay_when_seed_rules_session_then_output_bytes_as_before() -> None:
    config = yaml.safe_load(seed_rules.YAML)

    output = _replay(seed_rules.tape().to_bytes(), config, seed_rules.KEY)

    assert b'"decisions"' in output
    assert _digest(output) == SEED_RULES_OUT


def test_replay_when_bad_lines_then_dead_letters_as_before() -> None:
    lines = list(generate(GenParams(symbols=5, accounts=2, days=1, seed=3, session_minutes=30)))
    bar = orjson.loads(lines[0])
    bad = [
        b"not json",
        b'{"topic": "bars"}',
        orjson.dumps({**bar, "value": {**bar["value"], "high": 1e-3}}),
        orjson.dumps({**bar, "value": {**bar["value"], "close": float("nan")}}),
        orjson.dumps({**bar, "value": {**bar["value"], "ts": "2024-01-02"}}),
        orjson.dumps({**bar, "value": {**bar["value"], "volume": -1.0, "extra": 1}}),
        orjson.dumps({**bar, "value": {**bar["value"], "symbol": " S 1 "}}),
        orjson.dumps({"topic": "bars", "key": 3, "value": bar["value"]}),
    ]
    tape = lines[:20] + bad + lines[20:]

    output = _replay(tape, {})

    assert output.count(b'"deadletter"') == len(bad)
    assert _digest(output) == "befcc0ae4c536fbad43ab9df6e910c54d18fafc0020c4abd6438a202ef9de2a0"
