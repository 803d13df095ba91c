"""Shared field types: event time, finite and bounded numbers, identifiers.

Every input field has a finite, documented bound (docs/guards.md "Input bounds"); a value outside is a
schema error naming the field's path, dead-lettered like any other bad input (SPEC §8).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from schemas.timefmt import TS_MAX_MS, format_ts, parse_input_ts, parse_ts

_TIME_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "format": "date-time", "description": "ISO 8601 with offset"},
            {"type": "integer", "description": "epoch milliseconds"},
        ]
    },
    mode="validation",
)

EventTime = Annotated[
    int,
    BeforeValidator(parse_ts),
    PlainSerializer(format_ts, return_type=str, when_used="json"),
    _TIME_SCHEMA,
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
"""Event time: epoch ms inside the engine, ISO 8601 or epoch ms on input, ISO 8601 UTC ms on output."""

InputTime = Annotated[
    int,
    BeforeValidator(parse_input_ts),
    PlainSerializer(format_ts, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time", "description": "ISO 8601 with offset, before 2200"},
                {"type": "integer", "minimum": 0, "exclusiveMaximum": TS_MAX_MS, "description": "epoch ms"},
            ]
        },
        mode="validation",
    ),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
"""An input's event time, within [1970-01-01T00:00:00Z, 2200-01-01T00:00:00Z)."""

PRICE_MIN = 1e-8
PRICE_MAX = 1e9
QTY_MAX = 1e12
VOLUME_MAX = 1e15
MONEY_MIN = 1e-6
MONEY_MAX = 1e15
WEIGHT_MAX = 100.0

Finite = Annotated[float, Field(allow_inf_nan=False, strict=True)]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]
NonNegativeFinite = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
Price = Annotated[float, Field(ge=PRICE_MIN, le=PRICE_MAX, allow_inf_nan=False, strict=True)]
Quantity = Annotated[float, Field(gt=0, le=QTY_MAX, allow_inf_nan=False, strict=True)]
Volume = Annotated[float, Field(ge=0, le=VOLUME_MAX, allow_inf_nan=False, strict=True)]
Fee = Annotated[float, Field(ge=0, le=QTY_MAX, allow_inf_nan=False, strict=True)]


def _zero_or_at_least_a_millionth(value: float) -> float:
    if 0 < value < MONEY_MIN:
        raise ValueError(f"an amount must be 0 or at least {MONEY_MIN:g}")
    return value


Money = Annotated[
    float, Field(ge=0, le=MONEY_MAX, allow_inf_nan=False, strict=True), AfterValidator(_zero_or_at_least_a_millionth)
]
"""Equity and balance: 0, or from a millionth of a currency unit up to 1e15 (ratios of them stay finite)."""
SignedMoney = Annotated[float, Field(ge=-MONEY_MAX, le=MONEY_MAX, allow_inf_nan=False, strict=True)]
Weight = Annotated[float, Field(ge=-WEIGHT_MAX, le=WEIGHT_MAX, allow_inf_nan=False, strict=True)]

Name = Annotated[str, Field(min_length=1, max_length=256)]
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@/#+=~-]+$")]
"""Ids and account names: 1-128 characters of [A-Za-z0-9_.:@/#+=~-]."""

RESERVED_ACCOUNTS = frozenset({"@", "#applied"})
"""Names the level tables use for their own keys (a partition's state, the batch marker): an account so
named would share its table key with them, so no input, control or configuration may name one."""


def not_reserved_account(name: str) -> str:
    """`name`, unless it is one of `RESERVED_ACCOUNTS`."""
    if name in RESERVED_ACCOUNTS:
        raise ValueError(f"account name {name!r} is reserved for the guard's own table keys")
    return name


AccountId = Annotated[Id, AfterValidator(not_reserved_account)]
"""An account name: an `Id` other than the reserved `@` and `#applied`."""
Symbol = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_./:^=-]+$")]
"""Symbols: 1-32 characters of [A-Za-z0-9_./:^=-] (BRK.B, BF-B, ^GSPC, EUR/USD, ES=F)."""
Signature = Annotated[str, Field(max_length=128, pattern=r"^[0-9a-fA-F]*$")]

PARAMS_MAX_DEPTH = 4
PARAMS_MAX_ENTRIES = 64
PARAMS_MAX_TEXT = 1024
PARAMS_MAX_BYTES = 8 * 1024


def _check_params(value: dict[str, Any]) -> dict[str, Any]:
    """A control's `params`: at most 4 deep, 64 entries, 1 KiB strings, finite numbers, 8 KiB of JSON."""
    entries = 0
    size = 2
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > PARAMS_MAX_DEPTH:
                raise ValueError(f"params nested deeper than {PARAMS_MAX_DEPTH} levels")
            children = list(node.items()) if isinstance(node, dict) else [("", v) for v in node]
            entries += len(children)
            if entries > PARAMS_MAX_ENTRIES:
                raise ValueError(f"params hold more than {PARAMS_MAX_ENTRIES} entries")
            for key, child in children:
                if len(key) > PARAMS_MAX_TEXT:
                    raise ValueError(f"a params key is longer than {PARAMS_MAX_TEXT} characters")
                size += len(key) + 4
                stack.append((child, depth + 1))
        elif isinstance(node, str):
            if len(node) > PARAMS_MAX_TEXT:
                raise ValueError(f"a params string is longer than {PARAMS_MAX_TEXT} characters")
            size += len(node) + 2
        elif isinstance(node, float):
            if node != node or node in (float("inf"), float("-inf")):
                raise ValueError("params numbers must be finite")
            size += 24
        elif isinstance(node, bool | int) or node is None:
            if isinstance(node, int) and not isinstance(node, bool) and abs(node) > 2**53:
                raise ValueError("params integers must lie within ±2**53")
            size += 24
        else:
            raise ValueError(f"params may hold JSON values only, not {type(node).__name__}")
        if size > 4 * PARAMS_MAX_BYTES:
            raise ValueError(f"params larger than {PARAMS_MAX_BYTES} bytes")  # long before encoding it
    if len(orjson.dumps(value)) > PARAMS_MAX_BYTES:
        raise ValueError(f"params larger than {PARAMS_MAX_BYTES} bytes of JSON")
    return value


Params = Annotated[dict[str, Any], AfterValidator(_check_params)]


class InputModel(BaseModel):
    """Strict, immutable input message."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class OutputModel(BaseModel):
    """Immutable output message."""

    model_config = ConfigDict(frozen=True, extra="forbid")
