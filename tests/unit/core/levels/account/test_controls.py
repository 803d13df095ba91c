"""Signed operator controls (SPEC §8): HALT, RESUME; unsigned, forged, expired, replayed fail closed."""

from __future__ import annotations

from typing import Any

from streams.core.levels.account.controls import canonical_bytes, check_signature, sign
from streams.testing import TapeBuilder, TapeResult

KEY = b"test-control-key"
T0 = "2024-01-15T14:00:00Z"
LATER = "2024-01-15T15:00:00Z"


def _book() -> TapeBuilder:
    tape = TapeBuilder().equity("a", T0, 100_000).equity("b", T0, 50_000)
    tape.flat_bar("X", T0, 10.0).fill("a", "X", "BUY", 100, 10.0, "2024-01-15T14:00:10Z")
    return tape


def _states(result: TapeResult) -> list[tuple[str, str, str]]:
    return [(h.account, h.state.value, h.reason) for h in result.halts]


def _security(result: TapeResult) -> list[str]:
    return [e.details["error"] for e in result.events if e.kind == "security"]


def test_signature_when_computed_then_hmac_over_sorted_compact_json_without_signature() -> None:
    value: dict[str, Any] = {
        "nonce": "n1",
        "command": "HALT",
        "account": "a",
        "ts": 1,
        "issued_by": "ops",
        "expires_at": 2,
        "params": {"é": 1},
    }
    signed = {**value, "signature": sign(value, KEY)}

    assert (
        canonical_bytes(signed)
        == (
            '{"account":"a","command":"HALT","expires_at":2,"issued_by":"ops","nonce":"n1","params":{"é":1},"ts":1}'
        ).encode()
    )
    assert check_signature(signed, KEY) is None
    assert check_signature({**signed, "account": "b"}, KEY) == "forged control: signature does not match"


def test_signed_halt_when_positions_open_then_halted_and_flattened() -> None:
    tape = _book().control("HALT", "a", "2024-01-15T14:01:00Z", "n1", LATER, KEY)

    result = tape.run({}, control_key=KEY)

    assert _states(result) == [("a", "HALTED", "operator_halt")]
    flatten = [d for d in result.decisions if d.origin.value == "flatten"]
    assert [(d.symbol, d.action.value, d.qty) for d in flatten] == [("X", "ALLOW", 100)]
    assert [e.kind for e in result.events if e.kind == "control_applied"] == ["control_applied"]


def test_signed_resume_when_shutdown_then_active_and_only_resume_lifts_it() -> None:
    tape = TapeBuilder().equity("a", T0, 100_000).equity("a", "2024-01-15T14:01:00Z", 89_000)  # total loss 11 %
    tape.equity("a", "2024-01-16T14:00:00Z", 95_000)  # a day roll does not lift SHUTDOWN
    tape.control("RESUME", "a", "2024-01-16T14:01:00Z", "n2", "2024-01-16T15:00:00Z", KEY)

    result = tape.run({"accounts": {"a": {"profile": "standard"}}}, control_key=KEY)

    assert _states(result) == [("a", "SHUTDOWN", "max_total_loss"), ("a", "ACTIVE", "operator_resume")]


def test_unsigned_control_when_received_then_dead_letter_security_event_and_no_change() -> None:
    tape = _book().control("HALT", "a", "2024-01-15T14:01:00Z", "n1", LATER, None)

    result = tape.run({}, control_key=KEY)

    assert _states(result) == []
    assert [o.value.error for o in result.topic("deadletter")] == ["security: unsigned control"]  # type: ignore[attr-defined]
    assert _security(result) == ["security: unsigned control"]


def test_forged_control_when_signed_with_another_key_then_refused() -> None:
    tape = _book().control("HALT", "a", "2024-01-15T14:01:00Z", "n1", LATER, b"attacker")

    result = tape.run({}, control_key=KEY)

    assert _states(result) == []
    assert _security(result) == ["security: forged control: signature does not match"]


def test_expired_control_when_past_expires_at_in_event_time_then_refused() -> None:
    tape = _book().flat_bar("X", "2024-01-15T16:00:00Z", 10.0)  # the market clock passes expires_at
    tape.control("HALT", "a", "2024-01-15T14:30:00Z", "n1", LATER, KEY)

    result = tape.run({}, control_key=KEY)

    assert _states(result) == []
    assert _security(result) == ["expired control"]
    assert len(result.topic("deadletter")) == 1


def test_replayed_nonce_when_sent_twice_then_second_refused() -> None:
    tape = _book().control("HALT", "a", "2024-01-15T14:01:00Z", "n1", LATER, KEY)
    tape.control("RESUME", "a", "2024-01-15T14:02:00Z", "n2", LATER, KEY)
    tape.control("HALT", "a", "2024-01-15T14:01:00Z", "n1", LATER, KEY)  # the very same message again

    result = tape.run({}, control_key=KEY)

    assert _states(result) == [("a", "HALTED", "operator_halt"), ("a", "ACTIVE", "operator_resume")]
    assert _security(result) == ["replayed control: nonce already used"]


def test_control_when_no_key_configured_then_refused_fail_closed() -> None:
    tape = _book().control("HALT", "a", "2024-01-15T14:01:00Z", "n1", LATER, KEY)

    result = tape.run({})

    assert _states(result) == []
    assert "no control key configured" in _security(result)[0]


def test_star_halt_when_signed_then_every_account_halted() -> None:
    tape = _book().control("HALT", "*", "2024-01-15T14:01:00Z", "n1", LATER, KEY)

    result = tape.run({}, control_key=KEY)

    assert _states(result) == [("a", "HALTED", "operator_halt"), ("b", "HALTED", "operator_halt")]


def test_unsigned_control_when_signatures_not_required_then_applied() -> None:
    tape = _book().control("HALT", "a", "2024-01-15T14:01:00Z", "n1", LATER, None)

    result = tape.run({"control": {"require_signature": False}})

    assert _states(result) == [("a", "HALTED", "operator_halt")]
