"""Rebalance schedules in event time (seed 004 §8, SPEC §6.6).

A run falls on a local date chosen by `frequency` and `day_rule`, at `time_local` in `timezone`:

- weekly: `day_rule` a weekday ("friday", "fri") or `first_trading_day` / `last_trading_day` of the
  Monday–Sunday week; default `last_trading_day`.
- monthly: a day number ("15"; past the month's end it means the last calendar day) or
  `first_trading_day` / `last_trading_day`; default `last_trading_day`.
- quarterly: the same rules, applied to the quarter-end month (Mar/Jun/Sep/Dec), except that
  `first_trading_day` means the quarter's first trading day (Jan/Apr/Jul/Oct); default
  `last_trading_day`, i.e. the last trading day of Mar/Jun/Sep/Dec.
- custom_days: every `every_days` days from a start date: the policy's `start_date` if it has one,
  else `day_rule` when it is an ISO date, else 1970-01-01.

Trading days are Monday–Friday not listed in `holidays` (ISO dates, local calendar). A weekday or
day-number date that is not a trading day rolls to the next or previous trading day (`roll`); the
`*_trading_day` rules already name a trading day. A local time that a DST change skips is moved
forward by the gap (02:30 becomes 03:30); a local time that occurs twice is its first occurrence.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from schemas.config import RebalancePolicy

FIRST_TRADING_DAY = "first_trading_day"
LAST_TRADING_DAY = "last_trading_day"
DEFAULT_START = date(1970, 1, 1)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Spelled out rather than calendar.day_name, which follows the process locale.
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# A run date can lie at most this many days from its nominal date: the longest run of non-trading days.
_MAX_ROLL_DAYS = 366
# Periods are enumerated from this many days before `after_ms`, so a nominal date whose roll crosses it is seen.
_LOOKBACK_DAYS = 31
_MAX_PERIODS = 10_000


def next_run(after_ms: int, policy: RebalancePolicy) -> int:
    """Epoch ms of the first scheduled run strictly after `after_ms`."""
    zone = ZoneInfo(policy.timezone)
    at = _parse_time(policy.time_local)
    holidays = _holidays(tuple(policy.holidays))
    local_day = (_EPOCH + after_ms * _MS).astimezone(zone).date()
    for day in run_dates(local_day - timedelta(days=_LOOKBACK_DAYS), policy, holidays):
        ms = local_epoch_ms(day, at, zone)
        if ms > after_ms:
            return ms
    raise ValueError(f"no rebalance run within {_MAX_PERIODS} periods of {after_ms}")


def run_dates(start: date, policy: RebalancePolicy, holidays: frozenset[date] = frozenset()) -> Iterator[date]:
    """Run dates, non-decreasing, from the period that contains `start` on."""
    rule = (policy.day_rule or "").strip().lower()
    if policy.frequency == "custom_days":
        yield from _custom_days(start, policy, holidays)
    elif policy.frequency == "weekly":
        yield from _weekly(start, rule or LAST_TRADING_DAY, policy, holidays)
    else:
        yield from _monthly(start, rule or LAST_TRADING_DAY, policy, holidays)


def is_trading_day(day: date, holidays: frozenset[date]) -> bool:
    """Monday–Friday and not a listed holiday."""
    return day.weekday() < 5 and day not in holidays


def roll_to_trading_day(day: date, roll: str, holidays: frozenset[date]) -> date:
    """`day` if it trades, else the next (`roll="next"`) or previous trading day."""
    step = timedelta(days=1 if roll == "next" else -1)
    for _ in range(_MAX_ROLL_DAYS):
        if is_trading_day(day, holidays):
            return day
        day += step
    raise ValueError(f"no trading day within {_MAX_ROLL_DAYS} days (rolling {roll})")


def local_epoch_ms(day: date, at: time, zone: ZoneInfo) -> int:
    """Epoch ms of wall time `at` on `day` in `zone` (a skipped time moves forward; a repeated one is the first)."""
    # fold=0 reads a skipped wall time with the offset in force before the change, i.e. later by the gap.
    local = datetime.combine(day, at, tzinfo=zone)
    return (local.astimezone(UTC) - _EPOCH) // _MS


def _weekly(start: date, rule: str, policy: RebalancePolicy, holidays: frozenset[date]) -> Iterator[date]:
    monday = start - timedelta(days=start.weekday())
    weekday = None if rule in (FIRST_TRADING_DAY, LAST_TRADING_DAY) else _weekday(rule)
    for week in range(_MAX_PERIODS):
        first = monday + timedelta(weeks=week)
        if weekday is not None:
            yield roll_to_trading_day(first + timedelta(days=weekday), policy.roll, holidays)
            continue
        found = _trading_day_in(first, first + timedelta(days=6), rule, holidays)
        if found is not None:
            yield found


def _monthly(start: date, rule: str, policy: RebalancePolicy, holidays: frozenset[date]) -> Iterator[date]:
    quarterly = policy.frequency == "quarterly"
    day_number = None if rule in (FIRST_TRADING_DAY, LAST_TRADING_DAY) else _day_number(rule)
    index = start.year * 12 + start.month - 1
    if quarterly:
        index -= index % 3
    step = 3 if quarterly else 1
    for period in range(_MAX_PERIODS):
        year, month0 = divmod(index + period * step, 12)
        first_month = month0 + 1
        last_month = first_month + 2 if quarterly else first_month
        period_start = date(year, first_month, 1)
        period_end = date(year, last_month, calendar.monthrange(year, last_month)[1])
        if day_number is not None:
            nominal = period_end.replace(day=min(day_number, period_end.day))
            yield roll_to_trading_day(nominal, policy.roll, holidays)
            continue
        found = _trading_day_in(period_start, period_end, rule, holidays)
        if found is not None:
            yield found


def _custom_days(start: date, policy: RebalancePolicy, holidays: frozenset[date]) -> Iterator[date]:
    anchor = _custom_start(policy)
    every = policy.every_days
    first = max((start - anchor).days // every, 0)  # no run before the start date
    for period in range(first, first + _MAX_PERIODS):
        yield roll_to_trading_day(anchor + timedelta(days=period * every), policy.roll, holidays)


def _custom_start(policy: RebalancePolicy) -> date:
    """The policy's `start_date`, else `day_rule` as an ISO date, else 1970-01-01."""
    if policy.start_date is not None:
        return policy.start_date
    if policy.day_rule:
        try:
            return date.fromisoformat(policy.day_rule.strip())
        except ValueError:
            raise ValueError(
                f"rebalance.day_rule for custom_days must be an ISO start date, got {policy.day_rule!r}"
            ) from None
    return DEFAULT_START


def _trading_day_in(first: date, last: date, rule: str, holidays: frozenset[date]) -> date | None:
    """The first or last trading day in [first, last], or None when none trades."""
    days = (last - first).days
    offsets = range(days + 1) if rule == FIRST_TRADING_DAY else range(days, -1, -1)
    for offset in offsets:
        day = first + timedelta(days=offset)
        if is_trading_day(day, holidays):
            return day
    return None


def _weekday(rule: str) -> int:
    for index, name in enumerate(_WEEKDAYS):
        if rule in (name, name[:3]):
            return index
    raise ValueError(f"rebalance.day_rule for weekly must be a weekday or first/last_trading_day, got {rule!r}")


def _day_number(rule: str) -> int:
    if rule.isdigit() and 1 <= int(rule) <= 31:
        return int(rule)
    raise ValueError(f"rebalance.day_rule must be a day 1-31 or first/last_trading_day, got {rule!r}")


@lru_cache(maxsize=64)
def _parse_time(text: str) -> time:
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise ValueError(f"rebalance.time_local must be HH:MM, got {text!r}") from None


@lru_cache(maxsize=64)
def _holidays(texts: tuple[str, ...]) -> frozenset[date]:
    try:
        return frozenset(date.fromisoformat(text) for text in texts)
    except ValueError as exc:
        raise ValueError(f"rebalance.holidays must be ISO dates (YYYY-MM-DD): {exc}") from None


def first_run(ts: int, policy: RebalancePolicy) -> int:
    """An account's first scheduled run: the first after `ts`, and not before `start_date` (local midnight)."""
    after = ts
    if policy.start_date is not None:
        start = local_epoch_ms(policy.start_date, time(0, 0), ZoneInfo(policy.timezone))
        after = max(after, start - 1)
    return next_run(after, policy)
