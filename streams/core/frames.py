"""How a level's table values survive a crash: undo frames and the one `#applied` marker.

Pure functions of bytes, used by the worker's table-backed agents (`streams.worker.partitioned`):

- a stored value is a frame: the source offset of the batch that wrote it, the JSON state after that
  batch, and the committed JSON value it replaced (or nothing);
- `#applied`, the batch offset, is written last, after every value of the batch is in Kafka: a frame
  above it (a changelog cut inside a batch, or a batch whose marker never landed) stands for the value
  it replaced.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import orjson

APPLIED = "#applied"

_FRAME = struct.Struct(">qI")  # the batch offset, the length of the current value


def frame(raw: bytes) -> tuple[int, bytes, bytes]:
    """A stored value's batch offset, current JSON and replaced JSON (`b""`: the key did not exist)."""
    at, size = _FRAME.unpack_from(raw)
    body = raw[_FRAME.size :]
    return at, body[:size], body[size:]


def committed(raw: bytes | None, applied: int) -> bytes:
    """The JSON a stored value stands for when its partition has applied up to `applied` (`b""`: none)."""
    if raw is None:
        return b""
    at, cur, prev = frame(raw)
    return cur if at <= applied else prev


def stored(at: int, cur: bytes, previous: bytes | None, applied: int) -> bytes:
    """The table value for the JSON state `cur` after batch `at`, replacing `previous`.

    The undo part is the committed value of `previous` as of `applied`, the last marker in Kafka: after
    a restore from a changelog cut, the local value may still be the cut batch's, which must not become
    the value to fall back to. Framed rather than nested JSON, so that keeping the replaced value costs
    a slice, not a parse.
    """
    return _FRAME.pack(at, len(cur)) + cur + committed(previous, applied)


def unchanged(previous: bytes | None, cur: bytes, applied: int) -> bool:
    """True when `previous` is committed and already holds `cur`: writing it again would change nothing."""
    if previous is None:
        return False
    at, old, _ = frame(previous)
    return at <= applied and old == cur


def applied_value(at: int) -> bytes:
    """The `#applied` marker: every batch up to offset `at` is applied and in Kafka."""
    return stored(at, b"", None, at)


def applied_of(raw: bytes | None) -> int:
    """The offset an `#applied` marker records (-1: none)."""
    return frame(raw)[0] if raw is not None else -1


def restore_at(values: Iterable[tuple[str, bytes]], applied: int) -> dict[str, Any]:
    """Each key's state as of `applied`, the offset of the partition's marker.

    A value written by a batch beyond `applied` stands for the value it replaced; a key that batch
    created does not exist yet.
    """
    state: dict[str, Any] = {}
    for key, raw in values:
        if key == APPLIED:
            continue
        value = committed(raw, applied)
        if value:
            state[key] = orjson.loads(value)
    return state
