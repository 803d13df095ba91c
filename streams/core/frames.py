"""How a level's table values survive a crash: undo frames, the applied offset and item tags.

Pure functions of bytes, used by the worker's level agents (`streams.app`):

- a stored value is a frame: the source offset of the batch that wrote it, the JSON state after that
  batch, and the committed JSON value it replaced (or nothing);
- `#applied` is written last in every batch: a frame above it (a changelog cut inside a batch) stands
  for the value it replaced;
- `#applied` also holds the tag of the last item applied, so items a crashed upstream level forwards
  a second time (at new offsets, with the same tags) are skipped.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import orjson

APPLIED = "#applied"
Tag = tuple[int, ...]
T = TypeVar("T")

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

    The undo part is the committed value of `previous`: after a restore from a changelog cut, the
    local value may still be the cut batch's, which must not become the value to fall back to.
    Framed rather than nested JSON, so that keeping the replaced value costs a slice, not a parse.
    """
    return _FRAME.pack(at, len(cur)) + cur + committed(previous, applied)


def unchanged(previous: bytes | None, cur: bytes, applied: int) -> bool:
    """True when `previous` is committed and already holds `cur`: writing it again would change nothing."""
    if previous is None:
        return False
    at, old, _ = frame(previous)
    return at <= applied and old == cur


def applied_value(at: int, hw: Tag | None) -> bytes:
    """The `#applied` value: the batch offset and the tag of the last item applied."""
    return stored(at, orjson.dumps(list(hw)) if hw is not None else b"", None, at)


def restore_at(values: Iterable[tuple[str, bytes]], applied: int) -> dict[str, Any]:
    """Each key's state as of `applied`, the offset the chain's one marker records (see `restore`)."""
    state: dict[str, Any] = {}
    for key, raw in values:
        if key == APPLIED:
            continue
        value = committed(raw, applied)
        if value:
            state[key] = orjson.loads(value)
    return state


def applied_of(raw: bytes | None) -> int:
    """The offset an `#applied` marker records (-1: none)."""
    return frame(raw)[0] if raw is not None else -1


def restore(values: Iterable[tuple[str, bytes]]) -> tuple[int, Tag | None, dict[str, Any]]:
    """A partition's applied offset, the tag of its last applied item and each key's state as of then.

    A value written by a batch beyond `#applied` (a changelog cut inside that batch) stands for the
    value it replaced; a key that batch created does not exist yet.
    """
    frames = {key: raw for key, raw in values}
    marker = frames.pop(APPLIED, None)
    applied, hw = -1, None
    if marker is not None:
        applied, body, _ = frame(marker)
        hw = tuple(orjson.loads(body)) if body else None
    state: dict[str, Any] = {}
    for key, raw in frames.items():
        value = committed(raw, applied)
        if value:
            state[key] = orjson.loads(value)
    return applied, hw, state


def fresh(tagged: Sequence[tuple[Tag, T]], hw: Tag | None) -> tuple[list[tuple[Tag, T]], int, Tag | None]:
    """The items above the high-water tag `hw`, how many were skipped, and the new high-water tag.

    Tags increase along a partition's log except where a crashed upstream level sent part of its log
    again: those repeats are at or below `hw` and are skipped, never applied twice.
    """
    kept: list[tuple[Tag, T]] = []
    skipped = 0
    for tag, item in tagged:
        if hw is not None and tag <= hw:
            skipped += 1
            continue
        kept.append((tag, item))
        hw = tag
    return kept, skipped, hw


def src_marker(level: str, partition: int, tag: Tag, index: int) -> bytes:
    """The `rg-src` header of an output: which level and partition sent it for which item."""
    return f"{level}|{partition}|{'.'.join(map(str, tag))}|{index}".encode()
