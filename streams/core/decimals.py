"""Limits and trigger levels compared as the decimals they denote (SPEC §6.3), the same way in every level.

Binary floating point puts a level computed from decimal inputs a hair off the decimal it stands for:
a short entered at 50 with a 10 % trailing stop has its level at 50 × 1.1 = 55.000000000000007, so the
bar whose high is 55 would not trigger it, and a 20 % weight of 100,000 equity is 20,000.000000000004,
so a target of exactly 20,000 would be "clipped" to itself. Every trigger and cap comparison of the
guard goes through these functions instead of `<`, `<=`, `>` and `>=`: two numbers within a relative
tolerance of 1e-9 are equal, and a computed stop level is rounded to 12 significant digits (what it is
published and filled at).
"""

from __future__ import annotations

REL_TOL = 1e-9
"""Relative tolerance under which two figures are the same decimal (SPEC §6.3)."""


def same(a: float, b: float) -> bool:
    """`a` and `b` denote the same decimal."""
    return a == b or abs(a - b) <= REL_TOL * max(abs(a), abs(b))


def at_most(value: float, limit: float) -> bool:
    """`value <= limit`, decimals-wise: a value on the limit is within it."""
    return value <= limit or same(value, limit)


def at_least(value: float, limit: float) -> bool:
    """`value >= limit`, decimals-wise: a value on the level reaches it."""
    return value >= limit or same(value, limit)


def over(value: float, limit: float) -> bool:
    """`value > limit`, decimals-wise: only a value beyond the limit exceeds it."""
    return not at_most(value, limit)


def under(value: float, limit: float) -> bool:
    """`value < limit`, decimals-wise: only a value short of the level falls below it."""
    return not at_least(value, limit)


def level(value: float) -> float:
    """A level computed from decimal inputs, as the decimal it denotes (12 significant digits)."""
    return float(f"{value:.12g}")
