"""Fuzzing every input topic (SPEC §3, §4, §8): adversarial tape lines through decode and replay.

The lines come from `tests/fuzzing.py`: wrong types, extremes, NaN and Infinity however spelt, times
far in the past and future, unicode and control characters, 100k-character strings, params 1000 deep
and 10k wide, duplicate keys, messages over 1 MiB, broken envelopes, and values exactly at and just
beyond every input limit. Two paths, each searched at random (Hypothesis) and swept (every fixed
adversarial value in every field, every run):

- decode: `decode_line` returns a model inside every limit, or raises `BadMessage`, nothing else; a
  line beyond a limit is refused, a line exactly at the limits is taken;
- replay: mixed into a session of accounts A1 and A2 (beside FZ accounts that the fuzzed lines name),
  nothing escapes, no level raises, every line is processed or dead-lettered exactly once, and the
  session's decisions and halts are those of the session alone.

`RISKGUARD_FUZZ_EXAMPLES` sets the random examples per topic (default 200). Each test prints one line
per topic, `FUZZ topic=<t> cases=<n> escapes=0` (shown with `pytest -s`).
"""

from __future__ import annotations

import io
import os
from collections import Counter
from datetime import UTC, datetime
from functools import cache, partial
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.config import Config, config_from_dict
from schemas.inputs import Bar
from streams.core.engine import Engine, Output
from streams.tape import BadMessage, decode_line, replay
from streams.testing import TapeBuilder
from tests.fuzzing import (
    FIELDS,
    FUZZ_CONTROL_KEY,
    FUZZ_TOPICS,
    INPUT_TOPICS,
    NUMBER_BOUNDS,
    Case,
    adversarial_case,
    edge_cases,
    model_violations,
)

EXAMPLES = int(os.environ.get("RISKGUARD_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)

GOOD_ACCOUNTS = ("A1", "A2")
CONFIG: dict[str, Any] = {
    "risk": {
        "per_trade": {"max_notional": 20_000, "lot_size": 1},
        "per_symbol": {"default_cap": 30_000, "band_pct": 0.05, "rebalance_cadence": "30m"},
        "stops": {"default": {"stop_loss_pct": 0.03}},
        "portfolio": {"gross_cap": 80_000, "vol_target": {"enabled": True, "lookback": 3}},
        # Too short a session for correlations: every symbol its own cluster, whatever FZ bars come (the
        # market-wide levels meet fuzzed lines in `test_replay_when_fuzzed_lines_reach_every_market_level_...`).
        "clusters": {"window": 30, "min_periods": 20},
    },
    "accounts": {  # every sizing method and stop kind meets the fuzzed values
        "FZ1": {"risk": {"stops": {"default": {"stop_loss_pct": 0.05, "take_profit_pct": 0.1, "trailing_pct": 0.05}}}},
        "FZ2": {"risk": {"sizing": {"method": "volatility_adjusted"}}},
        "FZ3": {"risk": {"sizing": {"method": "kelly", "kelly_min_trades": 1}}},
    },
}


def _at(minute: int) -> str:
    return datetime.fromtimestamp(1_705_327_200 + minute * 60, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _session() -> TapeBuilder:
    """A1 and A2 over 90 minutes of one day: allows, clips, denies, stops, a shutdown, a flatten.

    Beside them, the FZ accounts and symbols the fuzzed lines name hold equity, prices, targets and
    positions, so that a valid fuzzed signal, fill or bar is sized, filled and stopped for real.
    """
    tape = TapeBuilder().equity("A1", _at(0), 100_000).equity("A2", _at(0), 50_000)
    tape.equity("FZ1", _at(0), 1_000_000).equity("FZ2", _at(0), 100_000).equity("FZ3", _at(0), 50_000)
    prices = {"AAA": 50.0, "BBB": 20.0, "CCC": 10.0, "FZA": 100.0, "FZB": 20.0, "FZ.C": 5.0}
    moves = {"AAA": 1.002, "BBB": 0.999, "CCC": 1.0}
    for step in range(10):
        minute = step * 10
        swing = (1.01, 0.985, 1.02, 0.99, 1.005)[step % 5]
        moves.update({"FZA": swing, "FZB": swing * 1.001, "FZ.C": 2 - swing})  # FZA and FZB move together
        if step == 4:
            moves["CCC"] = 0.95  # CCC falls through A2's 3% stop
        for symbol in sorted(prices):
            opening, close = prices[symbol], round(prices[symbol] * moves[symbol], 4)
            tape.bar(symbol, _at(minute), opening, max(opening, close) * 1.001, min(opening, close) * 0.999, close)
            prices[symbol] = close
        moves["CCC"] = 1.0
        if step == 0:
            tape.signal("A1", "AAA", _at(1), price=50.0, target_notional=15_000)
            tape.signal("A1", "BBB", _at(1), price=20.0, target_weight=0.4)
            tape.signal("A2", "CCC", _at(2), price=10.0, target_notional=8_000)
            tape.signal("A2", "AAA", _at(2), price=50.0, target_notional=-5_000)
            tape.signal("FZ1", "FZA", _at(2), target_notional=15_000)
            tape.signal("FZ2", "FZB", _at(2), target_notional=-10_000)
            tape.signal("FZ3", "FZ.C", _at(2), direction="LONG")
        elif step == 1:
            tape.fill("A1", "AAA", "BUY", 300, 50.0, _at(11))
            tape.fill("A1", "BBB", "BUY", 1000, 20.0, _at(11))
            tape.fill("A2", "CCC", "BUY", 800, 10.0, _at(12))
            tape.fill("A2", "AAA", "SELL", 100, 50.0, _at(12))
            tape.fill("FZ1", "FZA", "BUY", 150, 100.0, _at(12))
            tape.fill("FZ2", "FZB", "SELL", 500, 20.0, _at(12))
        elif step == 3:
            tape.equity("A1", _at(31), 100_400).equity("A2", _at(31), 49_800)
        elif step == 6:
            tape.equity("A2", _at(61), 44_000)  # 12% below the initial balance: shut down, flattened
            tape.signal("A2", "BBB", _at(62), price=20.0, target_notional=3_000)
            tape.signal("A1", "CCC", _at(62), price=9.5, direction="LONG")
        elif step == 7:
            tape.equity("FZ1", _at(71), 940_000)  # a 6% daily loss: FZ1 halted, from whatever it started with
        elif step == 8:
            tape.signal("A1", "AAA", _at(81), target_notional=25_000)
    return tape


@cache
def _config() -> Config:
    return config_from_dict(CONFIG)


MARKET_CONFIG: dict[str, Any] = {
    "risk": {
        "per_trade": {"lot_size": 1},
        "clusters": {"window": 6, "min_periods": 3, "method": "average", "demean_market": True, "cap_pct": 0.5},
        "sizing": {"method": "volatility_adjusted", "atr_period": 3},
        "stops": {"default": {"stop_loss_pct": 0.05, "take_profit_pct": 0.1, "trailing_pct": 0.05}},
        "portfolio": {"vol_target": {"enabled": True, "lookback": 3}},
    },
    "budget": {
        "enabled": True,
        "benchmark": "FZA",
        "auto_rebalance": True,
        "classifier": {"window": 4, "min_periods": 3},
        "vol_window": 3,
        "vol_min_periods": 2,
    },
    "rebalance": {
        "enabled": True,
        "frequency": "custom_days",
        "every_days": 1,
        "time_local": "14:35",
        "targets": {"FZA": 0.3, "FZB": 0.3, "FZ.C": 0.2},
    },
}


@cache
def _market() -> tuple[tuple[bytes, ...], tuple[int, ...], Config]:
    """FZ accounts only, with every market-wide level on: clusters, ATR, regime classifier, budget, schedule."""
    tape = TapeBuilder()
    for account, equity in (("FZ1", 1_000_000), ("FZ2", 100_000), ("FZ3", 50_000)):
        tape.equity(account, _at(0), equity)
    prices = {"FZA": 100.0, "FZB": 20.0, "FZ.C": 5.0}
    for step in range(8):
        swing = (1.01, 0.985, 1.02, 0.99, 1.005, 0.97)[step % 6]
        for symbol, move in (("FZA", swing), ("FZB", swing * 1.001), ("FZ.C", 2 - swing)):
            opening, close = prices[symbol], round(prices[symbol] * move, 4)
            tape.bar(symbol, _at(step * 10), opening, max(opening, close) * 1.002, min(opening, close) * 0.998, close)
            prices[symbol] = close
        if step == 1:
            tape.signal("FZ1", "FZA", _at(11), direction="LONG").signal("FZ2", "FZB", _at(11), direction="SHORT")
            tape.signal("FZ3", "FZ.C", _at(11), target_weight=0.5)
        elif step == 2:
            tape.fill("FZ1", "FZA", "BUY", 100, prices["FZA"], _at(21)).fill(
                "FZ2", "FZB", "SELL", 300, prices["FZB"], _at(21)
            )
        elif step == 5:
            tape.equity("FZ1", _at(51), 990_000).equity("FZ2", _at(51), 97_000)
    lines = tuple(tape.to_bytes())
    times = sorted({Bar.model_validate(orjson.loads(raw)["value"]).ts for raw in lines if b'"bars"' in raw})
    return lines, tuple(times), config_from_dict(MARKET_CONFIG)


@cache
def _baseline() -> tuple[tuple[bytes, ...], tuple[int, ...], tuple[dict[str, Any], ...]]:
    """The session's lines, its bar times and its outputs replayed alone."""
    lines = tuple(_session().to_bytes())
    times = sorted({Bar.model_validate(orjson.loads(raw)["value"]).ts for raw in lines if b'"bars"' in raw})
    sink = io.BytesIO()
    replay(Engine(_config(), control_key=FUZZ_CONTROL_KEY), lines, sink)
    return lines, tuple(times), tuple(orjson.loads(line) for line in sink.getvalue().splitlines())


class CountingEngine(Engine):
    """The engine, counting the events the shell hands it."""

    def __init__(self, config: Config, control_key: bytes | None = None) -> None:
        super().__init__(config, control_key=control_key)
        self.processed = 0

    def process(self, topic: str, event: Any) -> list[Output]:
        self.processed += 1
        return super().process(topic, event)


CONTROL_CHECK = CountingEngine(config_from_dict({}), control_key=FUZZ_CONTROL_KEY).control_check


def _refused(raw: bytes) -> bool:
    """Whether the shell refuses a line (a dead letter without reaching the engine)."""
    try:
        decode_line(raw.strip(), CONTROL_CHECK)
    except BadMessage:
        return True
    return False


def _comparable(outputs: Any) -> list[dict[str, Any]]:
    """Every output but dead letters and security events."""
    return [
        o
        for o in outputs
        if o["topic"] != "deadletter" and not (o["topic"] == "events" and o["value"].get("kind") == "security")
    ]


def _good(outputs: Any) -> list[dict[str, Any]]:
    """Decisions and halts of the session's own accounts."""
    return [o for o in outputs if o["topic"] in ("decisions", "halts") and o["value"].get("account") in GOOD_ACCOUNTS]


def _level_error(output: dict[str, Any]) -> bool:
    """A level's contained exception: its `level_error` event, or a dead letter with no origin."""
    if output["topic"] == "events":
        return bool(output["value"].get("kind") == "level_error")
    if output["topic"] == "deadletter":
        return all(output["value"]["source"].get(k) is None for k in ("topic", "partition", "offset", "line"))
    return False


def _replay_contained(
    lines: tuple[bytes, ...], config: Config, cases: list[Case], slots: list[int]
) -> tuple[list[dict[str, Any]], bool]:
    """Replay `lines` with `cases` inserted before the lines `slots`; check that everything is contained.

    Returns the outputs and whether every fuzzed line was refused (dead-lettered before the engine).
    """
    marked = [(raw, False) for raw in lines]
    for case, slot in sorted(zip(cases, slots, strict=False), key=lambda pair: -pair[1]):
        marked.insert(slot, (case.raw, True))
    tape = [raw for raw, _ in marked]
    fuzzed = {n for n, (_, is_fuzzed) in enumerate(marked, start=1) if is_fuzzed}
    nonblank = {n for n, raw in enumerate(tape, start=1) if raw.strip()}
    refused = {n for n in nonblank if _refused(tape[n - 1])}

    engine = CountingEngine(config, control_key=FUZZ_CONTROL_KEY)
    sink = io.BytesIO()
    count = replay(engine, tape, sink)
    outputs = [orjson.loads(line) for line in sink.getvalue().splitlines()]

    letters = Counter(
        o["value"]["source"]["line"]
        for o in outputs
        if o["topic"] == "deadletter" and o["value"]["source"].get("line") is not None
    )
    crashes = [o["value"].get("details", o["value"]) for o in outputs if _level_error(o)]
    assert not crashes, f"a level raised on a valid line (contained): {crashes[:3]}"
    assert count == len(nonblank)
    assert engine.processed == len(nonblank - refused), "a valid line not handed to the engine exactly once"
    assert all(n == 1 for n in letters.values()), f"a line dead-lettered more than once: {letters}"
    assert refused <= set(letters), f"refused lines not dead-lettered: {sorted(refused - set(letters))}"
    assert set(letters) <= fuzzed, f"a session line dead-lettered: {sorted(set(letters) - fuzzed)}"
    return outputs, fuzzed & nonblank <= refused


def _replay_mixed(cases: list[Case], slots: list[int]) -> None:
    """The session with `cases` inserted: contained, and the session's decisions and halts unchanged."""
    lines, _, alone = _baseline()
    outputs, all_refused = _replay_contained(lines, _config(), cases, slots)
    if all_refused:
        assert _comparable(outputs) == _comparable(alone), "dead-lettered lines changed the session's outputs"
    else:
        assert _good(outputs) == _good(alone), "valid FZ lines changed the session's decisions or halts"


def _check_decoded(case: Case, check: Any) -> None:
    """`decode_line` returns a model within every limit or raises BadMessage; the verdict is kept."""
    try:
        topic, _key, model = decode_line(case.raw, check)
    except BadMessage as exc:
        refused = str(exc)[:200]
        assert check is not None or case.expect != "accept", f"a line within the limits refused: {refused}"
        return
    if check is None:
        assert case.expect != "reject", f"a line beyond the limits accepted as {model!r:.300}"
    problems = model_violations(topic, model)
    assert not problems["times"], f"time outside [1970, 2200) accepted: {problems['times']}"
    assert not problems["numbers"], f"number outside its bounds accepted: {problems['numbers']}"
    assert not problems["names"], f"id, account or symbol outside the limits accepted: {problems['names']}"
    assert not problems["params"], f"params or signature outside the limits accepted: {problems['params']}"


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, AssertionError) else f"escaped {type(exc).__name__}: {text}"


def test_session_when_replayed_alone_then_decides_halts_and_stops() -> None:
    _, times, outputs = _baseline()
    decisions = [o["value"] for o in outputs if o["topic"] == "decisions"]
    halts = [o["value"] for o in outputs if o["topic"] == "halts"]
    assert {d["account"] for d in decisions} >= set(GOOD_ACCOUNTS)
    assert {"ALLOW", "CLIP", "DENY"} <= {d["action"] for d in decisions if d["account"] in GOOD_ACCOUNTS}
    assert {"signal", "stop_loss", "flatten"} <= {d["origin"] for d in decisions}
    assert any(h["account"] == "A2" and h["state"] == "SHUTDOWN" for h in halts)
    assert {d["account"] for d in decisions if d["origin"] == "signal"} >= {"FZ1", "FZ2", "FZ3"}
    assert any(h["account"] == "FZ1" and h["state"] == "HALTED" for h in halts)
    assert not [o for o in outputs if o["topic"] == "deadletter" or _level_error(o)]
    assert len(times) == 10


# --------------------------------------------------------------------------------------- decode
@pytest.mark.parametrize("topic", FUZZ_TOPICS)
def test_decode_when_adversarial_line_then_model_within_limits_or_bad_message(topic: str) -> None:
    seen: Counter[str] = Counter()

    @FUZZ
    @given(case=adversarial_case(topic))
    def run(case: Case) -> None:
        seen["cases"] += 1
        _check_decoded(case, None)
        _check_decoded(case, CONTROL_CHECK)

    run()
    print(f"FUZZ topic={topic} cases={seen['cases']} escapes=0")


@pytest.mark.parametrize("topic", INPUT_TOPICS)
def test_decode_when_each_edge_value_in_each_field_then_model_within_limits_or_bad_message(topic: str) -> None:
    cases = edge_cases(topic)
    failures: dict[str, str] = {}
    for case in cases:
        for check in (None, CONTROL_CHECK):
            try:
                _check_decoded(case, check)
            except Exception as exc:  # every failing line of the sweep, not the first only
                failures.setdefault(case.why, f"{_first_line(exc)} <- {case!r:.400}")
    assert not failures, f"{len(failures)} of {len(cases)} edge lines:\n" + "\n".join(list(failures.values())[:40])
    print(f"FUZZ topic={topic} cases={len(cases)} escapes=0")


# --------------------------------------------------------------------------------------- replay
def _fuzz_replays(topic: str, times: Any, length: int, replay: Any) -> None:
    """Random adversarial cases of `topic` at random places of a session of `length` lines, through `replay`."""
    seen: Counter[str] = Counter()

    @FUZZ
    @given(
        cases=st.lists(adversarial_case(topic, bar_times=times), min_size=1, max_size=4),
        slots=st.lists(st.integers(min_value=0, max_value=length), min_size=4, max_size=4),
    )
    def run(cases: list[Case], slots: list[int]) -> None:
        seen["cases"] += len(cases)
        replay(cases, slots)

    run()
    print(f"FUZZ topic={topic} cases={seen['cases']} escapes=0")


@pytest.mark.parametrize("topic", FUZZ_TOPICS)
def test_replay_when_adversarial_lines_interleaved_then_contained_and_session_unchanged(topic: str) -> None:
    lines, times, _ = _baseline()
    _fuzz_replays(topic, times, len(lines), _replay_mixed)


@pytest.mark.parametrize("topic", INPUT_TOPICS)
def test_replay_when_each_valid_edge_value_inserted_then_contained_and_session_unchanged(topic: str) -> None:
    lines, times, _ = _baseline()
    numeric = {spec.name for spec in FIELDS[topic] if spec.kind in NUMBER_BOUNDS}
    # Mid-session, on the state the session built; and, for numbers, first of all at the session's first
    # time: the value an account, a position or a price series starts from.
    middle = [(case, len(lines) // 3) for case in edge_cases(topic, bar_times=times)]
    first = [(case, 0) for case in edge_cases(topic, bar_times=times[:1]) if case.swept in numeric]
    cases = [(case, slot) for case, slot in middle + first if not _refused(case.raw)]
    failures: dict[str, str] = {}
    for case, slot in cases:
        try:
            _replay_mixed([case], [slot])
        except Exception as exc:  # every distinct failure of the sweep, not the first only
            failures.setdefault(_first_line(exc)[:120], f"{_first_line(exc)} <- {case!r:.400}")
    assert not failures, f"{len(failures)} distinct failures:\n" + "\n".join(list(failures.values())[:40])
    print(f"FUZZ topic={topic} cases={len(cases)} escapes=0")


@pytest.mark.parametrize("topic", ["bars", "equity", "signals"])
def test_replay_when_fuzzed_lines_reach_every_market_level_then_contained(topic: str) -> None:
    lines, times, config = _market()
    _fuzz_replays(topic, times, len(lines), partial(_replay_contained, lines, config))
