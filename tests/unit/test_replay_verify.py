"""Replay (SPEC §3) and verify (SPEC §7): dead letters, byte-identical replays, audit from the log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.testing import TapeBuilder
from tests import seed_rules

T0 = "2024-01-15T14:00:00Z"
CONFIG = "risk:\n  clusters: {cap_pct: null}\n  per_trade: {max_notional: 3000, lot_size: 1}\n"


def _session() -> TapeBuilder:
    tape = TapeBuilder().equity("a", T0, 100_000).equity("b", T0, 50_000)
    tape.flat_bar("X", T0, 10.0).flat_bar("Y", T0, 20.0)
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=10.0, target_notional=5_000)
    tape.signal("b", "Y", "2024-01-15T14:01:00Z", price=20.0, target_notional=-2_000)
    tape.fill("a", "X", "BUY", 300, 10.0, "2024-01-15T14:02:00Z")
    tape.equity("b", "2024-01-15T14:03:00Z", 44_000)
    return tape


def _write(tmp_path: Path, tape: TapeBuilder) -> tuple[Path, Path]:
    tape_path, config_path = tmp_path / "in.jsonl", tmp_path / "c.yaml"
    tape_path.write_bytes(b"\n".join(tape.to_bytes()) + b"\n")
    config_path.write_text(CONFIG, encoding="utf-8")
    return tape_path, config_path


def test_replay_when_bad_lines_then_each_dead_lettered_with_line_and_replay_goes_on() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000)
    tape.raw("{not json")
    tape.add("bars", "X", {"symbol": "X", "ts": T0, "open": 1, "high": 0.5, "low": 1, "close": 1})
    tape.raw('{"topic": "bars", "key": "X", "value": {"symbol": "X", "ts": 0, "open": NaN}}')
    tape.add("bars", "X", {"symbol": "X", "ts": T0, "open": -1, "high": 1, "low": 1, "close": 1})
    tape.add("weather", None, {"rain": True})
    tape.raw('{"topic": "signals", "key": "a", "value": {"pad": "' + "x" * (1024 * 1024) + '"}}')
    tape.signal("a", "X", "2024-01-15T14:01:00Z", price=10.0, target_notional=1_000)

    result = tape.run({"risk": {"clusters": {"cap_pct": None}}})

    letters = [o.value for o in result.topic("deadletter")]
    assert [letter.source.line for letter in letters] == [2, 3, 4, 5, 6, 7]  # type: ignore[attr-defined]
    errors = [letter.error for letter in letters]  # type: ignore[attr-defined]
    assert errors[0].startswith("not JSON") and "inconsistent OHLC" in errors[1]
    assert (
        "greater than or equal to 0.00000001" in errors[3]
        and "unknown input topic" in errors[4]
        and "1 MiB" in errors[5]
    )
    assert len(letters[5].raw) == 64 * 1024  # type: ignore[attr-defined]
    assert result.engine.stats["dead_letters"] == 6
    assert [d.action.value for d in result.decisions] == ["ALLOW"]


def test_replay_when_run_twice_then_byte_identical(tmp_path: Path) -> None:
    tape_path, config_path = _write(tmp_path, _session().raw("garbage"))
    runner = CliRunner()

    first = runner.invoke(app, ["replay", str(tape_path), "--config", str(config_path), "--out", str(tmp_path / "1")])
    second = runner.invoke(app, ["replay", str(tape_path), "--config", str(config_path), "--out", str(tmp_path / "2")])

    assert first.exit_code == second.exit_code == 0
    one = (tmp_path / "1").read_bytes()
    assert one == (tmp_path / "2").read_bytes()
    assert b'"topic":"decisions"' in one and b'"topic":"deadletter"' in one


def test_replay_when_dash_then_reads_stdin_and_writes_stdout(tmp_path: Path) -> None:
    tape_path, config_path = _write(tmp_path, _session())

    result = CliRunner().invoke(app, ["replay", "-", "--config", str(config_path)], input=tape_path.read_bytes())

    assert result.exit_code == 0
    topics = [orjson.loads(line)["topic"] for line in result.stdout_bytes.splitlines() if line.startswith(b"{")]
    assert "decisions" in topics


def test_verify_when_output_is_untouched_replay_then_exit_zero(tmp_path: Path) -> None:
    tape_path, config_path = _write(tmp_path, _session())
    out = tmp_path / "out.jsonl"
    CliRunner().invoke(app, ["replay", str(tape_path), "--config", str(config_path), "--out", str(out)])

    result = CliRunner().invoke(app, ["verify", str(tape_path), str(out), "--config", str(config_path)])

    assert result.exit_code == 0, result.output
    assert "verified" in result.output


def _tamper(out: Path, change: dict[str, object], facts: dict[str, object] | None = None) -> None:
    lines = out.read_bytes().splitlines()
    for index, line in enumerate(lines):
        envelope = orjson.loads(line)
        if envelope["topic"] == "decisions" and envelope["value"]["action"] in ("ALLOW", "CLIP"):
            envelope["value"].update(change)
            if facts:
                envelope["value"]["facts"].update(facts)
            lines[index] = orjson.dumps(envelope)
            break
    out.write_bytes(b"\n".join(lines) + b"\n")


def test_verify_when_decision_quantity_altered_then_nonzero_with_readable_report(tmp_path: Path) -> None:
    tape_path, config_path = _write(tmp_path, _session())
    out = tmp_path / "out.jsonl"
    CliRunner().invoke(app, ["replay", str(tape_path), "--config", str(config_path), "--out", str(out)])
    _tamper(out, {"qty": 999.0})

    result = CliRunner().invoke(app, ["verify", str(tape_path), str(out), "--config", str(config_path)])

    assert result.exit_code == 1
    assert "differs" in result.output and "qty" in result.output
    assert "does not follow from its facts" in result.output


def test_verify_when_facts_altered_consistently_then_input_check_still_catches_it(tmp_path: Path) -> None:
    tape_path, config_path = _write(tmp_path, _session())
    out = tmp_path / "out.jsonl"
    CliRunner().invoke(app, ["replay", str(tape_path), "--config", str(config_path), "--out", str(out)])
    _tamper(out, {}, facts={"equity": 1.0})

    result = CliRunner().invoke(app, ["verify", str(tape_path), str(out), "--config", str(config_path)])

    assert result.exit_code == 1
    assert "facts" in result.output


def test_verify_when_a_decision_is_missing_then_reported(tmp_path: Path) -> None:
    tape_path, config_path = _write(tmp_path, _session())
    out = tmp_path / "out.jsonl"
    CliRunner().invoke(app, ["replay", str(tape_path), "--config", str(config_path), "--out", str(out)])
    kept = [line for line in out.read_bytes().splitlines() if b'"halts"' not in line]
    out.write_bytes(b"\n".join(kept) + b"\n")

    result = CliRunner().invoke(app, ["verify", str(tape_path), str(out), "--config", str(config_path)])

    assert result.exit_code == 1
    assert "missing: halts" in result.output


def test_bad_config_when_replay_then_exit_2_and_key_named(tmp_path: Path) -> None:
    tape_path, config_path = _write(tmp_path, _session())
    config_path.write_text("risk:\n  per_trade: {lot_size: -5}\n", encoding="utf-8")

    result = CliRunner().invoke(app, ["replay", str(tape_path), "--config", str(config_path)])

    assert result.exit_code == 2
    assert "risk.per_trade.lot_size" in result.output


def test_verify_when_every_seed_rule_binds_then_each_decision_rederives_and_a_raised_beta_cap_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Factor cap, VaR and margin quotas, buying power and the rebalance overlays (tests/seed_rules.py).
    monkeypatch.setenv("RISKGUARD_CONTROL_KEY", seed_rules.KEY.decode())
    tape_path, config_path = tmp_path / "in.jsonl", tmp_path / "c.yaml"
    tape_path.write_bytes(b"\n".join(seed_rules.tape().to_bytes()) + b"\n")
    config_path.write_text(seed_rules.YAML, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    CliRunner().invoke(app, ["replay", str(tape_path), "--config", str(config_path), "--out", str(out)])
    reasons = {orjson.loads(line)["value"].get("reason") for line in out.read_bytes().splitlines()}

    verified = CliRunner().invoke(app, ["verify", str(tape_path), str(out), "--config", str(config_path)])
    _tamper(out, {}, {"beta_cap": 1e9})  # the first ALLOW/CLIP is X's CLIP by the factor cap
    tampered = CliRunner().invoke(app, ["verify", str(tape_path), str(out), "--config", str(config_path)])

    assert {"beta_cap", "buying_power", "entry_quota"} <= reasons
    assert verified.exit_code == 0, verified.output
    assert tampered.exit_code == 1
    assert "does not follow from its facts" in tampered.output


def test_riskguard_replay_when_run_then_neither_faust_nor_the_worker_nor_kafka_is_imported(tmp_path: Path) -> None:
    tape_path, config_path = _write(tmp_path, _session())
    script = (
        "import sys\n"
        "from streams.cli import app\n"
        f"try: app(['replay', {str(tape_path)!r}, '--config', {str(config_path)!r}, '-o', {str(tmp_path / 'o')!r}])\n"
        "except SystemExit as exit: assert not exit.code, exit.code\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} | set(sys.modules))))\n"
    )

    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, text=True).stdout.split()

    assert (tmp_path / "o").read_bytes().count(b'"topic":"decisions"') >= 2
    assert not {"faust", "mode", "aiokafka", "streams.worker"} & set(loaded)
