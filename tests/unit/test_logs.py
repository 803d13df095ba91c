"""JSON-lines logs (streams.logs): one format for structlog and stdlib loggers; secrets never logged (SPEC §8, §9)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from schemas.config import load_config
from streams.logs import (
    MASK,
    configure_logging,
    env_secrets,
    flush_decision_lines,
    log_output,
    policy_decision_fields,
)
from streams.testing import TapeBuilder

T0 = "2024-01-15T10:00:00Z"
# The control key of these tests; the quote makes its JSON spelling differ from the raw one.
SECRET = 'hmac-"key"-9f8e7d6c'  # noqa: S105 - a test value
SASL = "sasl-pass-0123456789"


@pytest.fixture
def out(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Logging configured into a buffer; the previous structlog and root-logger set-up restored after."""
    monkeypatch.setenv("RISKGUARD_CONTROL_KEY", SECRET)
    monkeypatch.setenv("RISKGUARD_KAFKA_PASSWORD", SASL)
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging("INFO", buffer)
    yield buffer
    structlog.configure(**saved)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def _allow_decision_outputs(seed001_path: Path) -> list[Any]:
    """Seed 001's worked example: 90 AAPL held, target 15,000 at 151 -> buy 5 to the lower band edge."""
    tape = TapeBuilder().equity("acct", T0, 100_000).flat_bar("AAPL", T0, 150.0)
    tape.fill("acct", "AAPL", "BUY", 90, 150.0, "2024-01-15T10:01:00Z")
    tape.signal("acct", "AAPL", "2024-01-15T10:30:00Z", price=151.0, target_notional=15_000)
    return tape.run(load_config(seed001_path)).outputs


def test_stdlib_warning_when_logged_then_one_json_line_with_timestamp_level_logger_event(out: io.StringIO) -> None:
    logging.getLogger("aiokafka").warning("Heartbeat failed for group %s", "riskguard")

    text = out.getvalue()
    (line,) = lines(out)
    assert text.count("\n") == 1
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    assert (line["level"], line["logger"], line["event"]) == (
        "warning",
        "aiokafka",
        "Heartbeat failed for group riskguard",
    )
    assert line["timestamp"].endswith("Z") and "T" in line["timestamp"]


def test_structlog_event_when_logged_then_same_json_shape_with_its_fields(out: io.StringIO) -> None:
    structlog.get_logger("riskguard.worker").info("worker_started", partitions=4)

    (line,) = lines(out)
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    assert (line["level"], line["logger"], line["event"], line["partitions"]) == (
        "info",
        "riskguard.worker",
        "worker_started",
        4,
    )


def test_debug_line_when_level_info_then_not_written(out: io.StringIO) -> None:
    logging.getLogger("faust").debug("noise")
    structlog.get_logger("riskguard").debug("noise")

    assert out.getvalue() == ""


def test_decision_when_logged_then_policy_decision_line_with_seed_telemetry_fields(
    out: io.StringIO, seed001_path: Path
) -> None:
    log = structlog.get_logger("riskguard.decisions")
    for output in _allow_decision_outputs(seed001_path):
        log_output(log, output)

    (line,) = [line for line in lines(out) if line["event"] == "policy_decision"]
    assert line["level"] == "info"
    assert line["ts"] == "2024-01-15T10:30:00.000Z"
    assert (line["account"], line["symbol"], line["action"], line["qty_delta"]) == ("acct", "AAPL", "ALLOW", 5.0)
    assert (line["reason"], line["layer"], line["origin"]) == ("buy_to_lower_bound", "per_symbol", "signal")
    assert line["decision_id"] and line["clip_ratio"] is None
    assert line["metadata"]["current_val"] == pytest.approx(90 * 151.0)
    assert line["metadata"]["target_val"] == pytest.approx(95 * 151.0)
    assert line["metadata"]["band_pct"] == 0.05


def test_clipped_sell_when_fields_taken_then_negative_qty_delta_and_clip_ratio(seed001_path: Path) -> None:
    tape = TapeBuilder().equity("acct", T0, 100_000)
    tape.signal("acct", "NVDA", "2024-01-15T10:30:00Z", price=150.0, target_notional=-25_000)
    (decision,) = tape.run(load_config(seed001_path)).decisions

    fields = policy_decision_fields(decision)

    assert (fields["action"], fields["side"]) == ("CLIP", "SELL")
    assert fields["qty_delta"] == -decision.qty < 0
    assert fields["clip_ratio"] == pytest.approx(decision.qty / decision.requested_qty)
    assert fields["clips"][-1][:2] == ["per_trade", "max_notional"]


def test_halt_when_logged_then_warning_line_named_halt_with_state_change(out: io.StringIO) -> None:
    key = b"k" * 16
    tape = TapeBuilder().equity("a", T0, 100_000)
    tape.control("HALT", "a", "2024-01-15T10:01:00Z", "n1", "2024-01-15T11:00:00Z", key)
    log = structlog.get_logger("riskguard.halts")
    for output in tape.run({}, control_key=key).outputs:
        log_output(log, output)

    (halt,) = [line for line in lines(out) if line["event"] == "halt"]
    assert halt["level"] == "warning"
    assert (halt["account"], halt["previous_state"], halt["state"], halt["reason"]) == (
        "a",
        "ACTIVE",
        "HALTED",
        "operator_halt",
    )
    assert "daily_loss_pct" in halt["facts"]


def test_secret_when_logged_anywhere_then_never_in_output_and_sensitive_keys_masked(out: io.StringIO) -> None:
    log = structlog.get_logger("riskguard.worker")
    log.info(
        "connecting",
        control_key=SECRET,
        sasl_plain_password=SASL,
        key="acct-7",
        params={"signature": "ab12", "note": f"key is {SECRET}"},
        raw=SECRET.encode(),
    )
    logging.getLogger("aiokafka").error("auth failed with %s / %s", SASL, SECRET)
    try:
        raise ValueError(f"bad key {SECRET}")
    except ValueError:
        logging.getLogger("faust").exception("crash")

    text = out.getvalue()
    parsed = lines(out)
    assert len(parsed) == 3
    for secret in (SECRET, SASL, json.dumps(SECRET)[1:-1]):
        assert secret not in text
    first = parsed[0]
    assert (first["control_key"], first["sasl_plain_password"], first["params"]["signature"]) == (MASK, MASK, MASK)
    assert first["key"] == "acct-7"  # a Kafka message key is not a secret
    assert first["params"]["note"] == f"key is {MASK}"
    assert parsed[1]["event"] == f"auth failed with {MASK} / {MASK}"
    assert "ValueError: bad key ***" in parsed[2]["exception"]


def test_refused_control_when_logged_then_dead_letter_line_omits_raw_message_with_signature(out: io.StringIO) -> None:
    key = b"k" * 16
    tape = TapeBuilder().equity("a", T0, 100_000).flat_bar("X", "2024-01-15T12:00:00Z", 10.0)
    tape.control("HALT", "a", "2024-01-15T10:30:00Z", "n1", "2024-01-15T11:00:00Z", key)  # expired on arrival
    result = tape.run({}, control_key=key)
    (letter,) = result.topic("deadletter")
    log = structlog.get_logger("riskguard.worker")

    log_output(log, letter)

    (line,) = lines(out)
    assert (line["event"], line["level"], line["error"]) == ("dead_letter", "warning", "security: expired control")
    assert "raw" not in line
    assert letter.value.raw and "signature" in letter.value.raw
    assert "signature" not in out.getvalue()


def test_env_secrets_when_read_then_control_key_passwords_and_password_file_but_not_settings_or_foreign_vars(
    tmp_path: Path,
) -> None:
    secret_file = tmp_path / "kafka-password"
    secret_file.write_text("from-the-file-42\nignored\n", encoding="utf-8")
    environ = {
        "RISKGUARD_CONTROL_KEY": SECRET,
        "RISKGUARD_KAFKA_PASSWORD": SASL,
        "RISKGUARD_KAFKA_PASSWORD_FILE": str(secret_file),
        "RISKGUARD_KAFKA_USERNAME": "riskguard-worker",
        "RISKGUARD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "RISKGUARD_KAFKA_CA_FILE": "/etc/ssl/ca.pem",
        "RISKGUARD_API_TOKEN": "abc",  # too short to mask everywhere without garbling ordinary words
        "GPG_KEY": "A035C8C19219BA821ECEA86B64E628F8D684696D",  # another program's variable
    }

    assert sorted(env_secrets(environ)) == sorted([SECRET, SASL, "from-the-file-42"])


def test_decision_when_no_secret_configured_then_direct_line_equals_the_generic_one(
    monkeypatch: pytest.MonkeyPatch, seed001_path: Path
) -> None:
    for name in ("RISKGUARD_CONTROL_KEY", "RISKGUARD_KAFKA_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    saved, root = structlog.get_config(), logging.getLogger()
    handlers = list(root.handlers)
    buffer = io.StringIO()
    try:
        configure_logging("INFO", buffer)
        log = structlog.get_logger("riskguard.decisions")
        (decision,) = [o for o in _allow_decision_outputs(seed001_path) if o.topic == "decisions"]
        log_output(log, decision)  # the direct line
        log.info("policy_decision", **policy_decision_fields(decision.value))  # the generic bridge
        logging.getLogger("riskguard.decisions").setLevel(logging.WARNING)
        log_output(log, decision)  # filtered out like any info line
    finally:
        logging.getLogger("riskguard.decisions").setLevel(logging.NOTSET)
        structlog.configure(**saved)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)

    direct, generic = lines(buffer)
    assert list(direct) == list(generic)  # same keys, same order
    assert {**direct, "timestamp": None} == {**generic, "timestamp": None}
    for line in (direct, generic):
        assert line["timestamp"].endswith("Z") and datetime.fromisoformat(line["timestamp"]).tzinfo is not None


def test_decision_when_a_field_holds_a_secret_then_the_line_is_masked_as_on_the_generic_path(
    out: io.StringIO, seed001_path: Path
) -> None:
    tape = TapeBuilder().equity(SASL, T0, 100_000).flat_bar("AAPL", T0, 150.0)
    tape.signal(SASL, "AAPL", "2024-01-15T10:30:00Z", price=151.0, target_notional=15_000)
    log = structlog.get_logger("riskguard.decisions")
    for output in tape.run(load_config(seed001_path)).outputs:
        log_output(log, output)

    assert SASL not in out.getvalue()
    (line,) = [line for line in lines(out) if line["event"] == "policy_decision"]
    assert line["account"] == MASK and line["symbol"] == "AAPL"


def test_decision_when_another_handler_listens_then_it_gets_the_line_too(out: io.StringIO, seed001_path: Path) -> None:
    other = io.StringIO()
    extra = logging.StreamHandler(other)
    logging.getLogger().addHandler(extra)
    try:
        log = structlog.get_logger("riskguard.decisions")
        for output in _allow_decision_outputs(seed001_path):
            log_output(log, output)
    finally:
        logging.getLogger().removeHandler(extra)

    assert [line["event"] for line in lines(out)].count("policy_decision") == 1
    assert "policy_decision" in other.getvalue()  # the direct path stood aside for the bridge


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_decision_lines_when_a_batch_is_logged_then_written_in_order_and_flushed_once_per_batch(
    seed001_path: Path,
) -> None:
    saved, root = structlog.get_config(), logging.getLogger()
    handlers = list(root.handlers)
    stream = _CountingStream()
    try:
        configure_logging("INFO", stream)
        log = structlog.get_logger("riskguard.decisions")
        (decision,) = [o for o in _allow_decision_outputs(seed001_path) if o.topic == "decisions"]
        for _ in range(3):
            log_output(log, decision)
        flushed_while_logging = stream.flushes
        flush_decision_lines()
        flush_decision_lines()  # nothing new: no second flush
    finally:
        structlog.configure(**saved)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)

    assert flushed_while_logging == 0
    assert stream.flushes == 1
    assert [line["event"] for line in lines(stream)] == ["policy_decision"] * 3
