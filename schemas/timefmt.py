"""Event-time parsing and formatting: ISO 8601 with offset or epoch ms in, ISO 8601 UTC (ms) out."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_ts(value: object) -> int:
    """Return epoch milliseconds for an ISO-8601 string with offset or an integer epoch-ms."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be ISO 8601 with offset or integer epoch milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or not value.is_integer():
            raise ValueError("epoch-ms timestamp must be a finite integer")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"not an ISO 8601 timestamp: {value!r}") from exc
        if parsed.tzinfo is None:
            raise ValueError(f"ISO 8601 timestamp needs an offset (e.g. Z): {value!r}")
        delta = parsed - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    raise ValueError("timestamp must be ISO 8601 with offset or integer epoch milliseconds")


@lru_cache(maxsize=65536)
def format_ts(ms: int) -> str:
    """Format epoch milliseconds as ISO 8601 UTC with millisecond precision."""
    seconds, millis = divmod(ms, 1000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"
