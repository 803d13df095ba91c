"""Shared field types: event time, finite numbers, identifiers."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from schemas.timefmt import format_ts, parse_ts

EventTime = Annotated[
    int,
    BeforeValidator(parse_ts),
    PlainSerializer(format_ts, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time", "description": "ISO 8601 with offset"},
                {"type": "integer", "description": "epoch milliseconds"},
            ]
        },
        mode="validation",
    ),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
"""Event time: epoch ms inside the engine, ISO 8601 or epoch ms on input, ISO 8601 UTC ms on output."""

Finite = Annotated[float, Field(allow_inf_nan=False, strict=True)]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]
NonNegativeFinite = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
Name = Annotated[str, Field(min_length=1, max_length=256)]


class InputModel(BaseModel):
    """Strict, immutable input message."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class OutputModel(BaseModel):
    """Immutable output message."""

    model_config = ConfigDict(frozen=True, extra="forbid")
