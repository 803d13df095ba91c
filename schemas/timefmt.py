"""Event-time parsing and formatting: ISO 8601 with offset or epoch ms in, ISO 8601 UTC (ms) out.

Input times are bounded (SPEC §8, docs/guards.md "Input bounds"): from 1970-01-01T00:00:00Z up to,
not including, 2200-01-01T00:00:00Z, for ISO text and epoch ms alike. A time outside is a schema
error, never a crash further down (calendars, formatting and schedules all work inside that span).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TS_MIN_MS = 0
TS_MAX_MS = 7_258_118_400_000  # 2200-01-01T00:00:00Z, excluded
_MAX_TEXT = 64  # no valid ISO 8601 time or epoch-ms number is longer
_DIGITS = frozenset("0123456789")
_ISO_CHARS = frozenset("0123456789:.,+-TWZtwz ")  # what an ISO 8601 time may hold: no control or non-ASCII text


def _bounded(ms: int) -> int:
    if not TS_MIN_MS <= ms < TS_MAX_MS:
        raise ValueError("timestamp must lie in [1970-01-01T00:00:00Z, 2200-01-01T00:00:00Z)")
    return ms


def parse_ts(value: object) -> int:
    """Unbounded epoch milliseconds of an ISO-8601 string with offset or an integer epoch-ms."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be ISO 8601 with offset or integer epoch milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or not value.is_integer():
            raise ValueError("epoch-ms timestamp must be a finite integer")
        if abs(value) >= 2.0**63:
            raise ValueError("timestamp must lie in [1970-01-01T00:00:00Z, 2200-01-01T00:00:00Z)")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_TEXT:
            raise ValueError("timestamp text longer than 64 characters")
        if text and set(text) <= _DIGITS:
            return int(text)
        if not set(text) <= _ISO_CHARS:
            raise ValueError(f"not an ISO 8601 timestamp or epoch-ms digits: {value!r}")
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"not an ISO 8601 timestamp: {value!r}") from exc
        if parsed.tzinfo is None:
            raise ValueError(f"ISO 8601 timestamp needs an offset (e.g. Z): {value!r}")
        try:
            delta = parsed - _EPOCH
        except OverflowError as exc:  # e.g. 0001-01-01 with a positive offset
            raise ValueError("timestamp must lie in [1970-01-01T00:00:00Z, 2200-01-01T00:00:00Z)") from exc
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    raise ValueError("timestamp must be ISO 8601 with offset or integer epoch milliseconds")


def parse_input_ts(value: object) -> int:
    """Epoch milliseconds of an input time, within [1970-01-01, 2200-01-01) UTC, else ValueError."""
    if type(value) is int and TS_MIN_MS <= value < TS_MAX_MS:
        return value  # epoch ms in range (nearly every tape line): what the general path returns
    return _bounded(parse_ts(value))


@lru_cache(maxsize=65536)
def format_ts(ms: int) -> str:
    """Format epoch milliseconds as ISO 8601 UTC with millisecond precision."""
    seconds, millis = divmod(ms, 1000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"
