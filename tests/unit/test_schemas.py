"""Input schemas (SPEC §4): strict validation, timestamps in both forms, exactly one target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from schemas.inputs import Bar, Equity, Fill, Signal
from schemas.outputs import Decision
from schemas.timefmt import format_ts, parse_ts
from streams.cli import app

BAR: dict[str, Any] = {"symbol": "AAPL", "ts": "2024-01-15T10:30:00Z", "open": 1, "high": 2, "low": 0.5, "close": 1.5}


def test_timestamp_when_iso_with_offset_or_epoch_ms_then_same_instant() -> None:
    assert parse_ts("2024-01-15T10:30:00Z") == parse_ts("2024-01-15T11:30:00+01:00") == 1705314600000
    assert parse_ts(1705314600000) == 1705314600000
    assert format_ts(1705314600123) == "2024-01-15T10:30:00.123Z"


def test_timestamp_when_naive_iso_then_rejected() -> None:
    with pytest.raises(ValidationError, match="offset"):
        Bar.model_validate({**BAR, "ts": "2024-01-15T10:30:00"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"high": 0.9}, "inconsistent OHLC"),
        ({"low": 1.2}, "inconsistent OHLC"),
        ({"close": 0}, "greater than or equal to 0.00000001"),
        ({"open": float("nan")}, "finite"),
        ({"high": float("inf")}, "finite"),
        ({"close": "1.5"}, "valid number"),
        ({"volume": -1}, "greater than or equal to 0"),
        ({"extra": 1}, "Extra inputs"),
    ],
)
def test_bar_when_invalid_then_rejected_with_reason(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Bar.model_validate({**BAR, **change})


def test_signal_when_zero_or_two_targets_then_rejected() -> None:
    base = {"signal_id": "s", "account": "a", "symbol": "X", "ts": 0}
    with pytest.raises(ValidationError, match="exactly one"):
        Signal.model_validate(base)
    with pytest.raises(ValidationError, match="exactly one"):
        Signal.model_validate({**base, "target_notional": 1, "direction": "LONG"})
    assert Signal.model_validate({**base, "target_weight": -0.1}).strategy == "default"


def test_fill_and_equity_when_invalid_numbers_then_rejected() -> None:
    fill = {"fill_id": "f", "account": "a", "symbol": "X", "side": "BUY", "qty": 1, "price": 1, "ts": 0}
    with pytest.raises(ValidationError):
        Fill.model_validate({**fill, "qty": 0})
    with pytest.raises(ValidationError):
        Fill.model_validate({**fill, "side": "HOLD"})
    with pytest.raises(ValidationError):
        Equity.model_validate({"account": "a", "ts": 0, "equity": -5})


def test_schema_command_when_run_then_writes_valid_json_schemas(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["schema", "--out", str(tmp_path)])

    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert "decisions.Decision.schema.json" in names and "config.schema.json" in names
    decision = json.loads((tmp_path / "decisions.Decision.schema.json").read_text())
    assert set(Decision.model_fields) <= set(decision["properties"])
    assert decision["properties"]["ts"]["format"] == "date-time"


RESERVED_CASES = [
    (Signal, {"signal_id": "s1", "symbol": "X", "ts": 1_704_205_800_000, "strategy": "t", "target_notional": 1.0}),
    (Fill, {"fill_id": "f1", "symbol": "X", "side": "BUY", "qty": 1.0, "price": 10.0, "ts": 1_704_205_800_000}),
    (Equity, {"ts": 1_704_205_800_000, "equity": 1_000.0}),
]


@pytest.mark.parametrize("name", ["@", "#applied"])
@pytest.mark.parametrize(("model", "fields"), RESERVED_CASES)
def test_account_when_named_like_a_table_key_of_the_guard_then_rejected(
    model: type[Any], fields: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValidationError, match="reserved for the guard's own table keys"):
        model.model_validate({**fields, "account": name})
    assert model.model_validate({**fields, "account": name + "x"}).account == name + "x"  # only the exact names


def test_control_and_config_when_an_account_is_named_like_a_table_key_then_rejected() -> None:
    from schemas.config import Config
    from schemas.inputs import Control

    control = {
        "command": "HALT",
        "ts": 1_704_205_800_000,
        "issued_by": "ops",
        "nonce": "n1",
        "expires_at": 1_704_209_400_000,
    }
    with pytest.raises(ValidationError, match="reserved"):
        Control.model_validate({**control, "account": "#applied"})
    assert Control.model_validate({**control, "account": "*"}).account == "*"
    with pytest.raises(ValidationError, match="reserved"):
        Config.model_validate({"accounts": {"@": {}}})
