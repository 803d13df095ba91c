"""Deterministic identifiers (SPEC §7): the same inputs always give the same id."""

from __future__ import annotations

import hashlib


def stable_id(kind: str, *parts: object) -> str:
    """A short, stable hash of a kind and its parts, e.g. ('dec', account, origin, source, symbol)."""
    text = "\x1f".join([kind, *(str(part) for part in parts)])
    return f"{kind}-" + hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def decision_id(account: str, origin: str, source_id: str, symbol: str) -> str:
    """decision_id = hash(account, origin, source id, symbol)."""
    return stable_id("dec", account, origin, source_id, symbol)
