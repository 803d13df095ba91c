"""Seed 004 §8 schedules in event time: day rules, weekend and holiday rolls both ways, DST in
America/New_York against Asia/Kolkata (no DST), month ends and quarter ends.

Calendar facts used: 2024-03-10 and 2024-11-03 are the US DST changes (Sundays); 2024-03-29 is a
Friday (Good Friday); 2024-06-15 and 2024-08-31 are Saturdays; 2024-06-30 and 2024-09-01 Sundays.
New York is UTC-5 in winter (EST) and UTC-4 in summer (EDT); Kolkata is UTC+5:30 all year.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.config import RebalancePolicy
from streams.core.levels.account.schedule import local_epoch_ms, next_run, roll_to_trading_day

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _policy(**overrides: Any) -> RebalancePolicy:
    return RebalancePolicy(**{"time_local": "15:10", "timezone": "Asia/Kolkata", **overrides})


def _runs(after: str, policy: RebalancePolicy, count: int) -> list[str]:
    runs, t = [], _ms(after)
    for _ in range(count):
        t = next_run(t, policy)
        runs.append(_iso(t))
    return runs


# ----------------------------------------------------------------- day rules and the strict "after"


def test_next_run_when_weekly_friday_in_kolkata_then_friday_1510_ist_is_0940_utc() -> None:
    # Wednesday 2024-06-12 -> Friday 2024-06-14 15:10 IST = 09:40Z.
    policy = _policy(frequency="weekly", day_rule="friday")

    assert _iso(next_run(_ms("2024-06-12T00:00:00+00:00"), policy)) == "2024-06-14T09:40Z"


def test_next_run_when_after_is_the_run_time_then_the_following_run_and_one_ms_before_then_this_one() -> None:
    policy = _policy(frequency="weekly", day_rule="fri")
    run = _ms("2024-06-14T09:40:00+00:00")

    assert next_run(run - 1, policy) == run
    assert _iso(next_run(run, policy)) == "2024-06-21T09:40Z"


def test_next_run_when_weekly_without_day_rule_then_last_trading_day_of_the_week() -> None:
    # Default weekly rule: the week's last trading day; with Friday 2024-03-29 a holiday that is Thursday.
    policy = _policy(frequency="weekly", holidays=["2024-03-29"])

    assert _runs("2024-03-25T00:00:00+00:00", policy, 2) == ["2024-03-28T09:40Z", "2024-04-05T09:40Z"]


# ----------------------------------------------------------------- weekend and holiday rolls


def test_next_run_when_day_15_is_a_saturday_then_rolls_to_monday_or_back_to_friday() -> None:
    # 2024-06-15 is a Saturday: next -> Monday 17th; previous -> Friday 14th.
    after = _ms("2024-06-01T00:00:00+00:00")

    assert _iso(next_run(after, _policy(frequency="monthly", day_rule="15", roll="next"))) == "2024-06-17T09:40Z"
    assert _iso(next_run(after, _policy(frequency="monthly", day_rule="15", roll="previous"))) == "2024-06-14T09:40Z"


def test_next_run_when_friday_is_a_holiday_then_rolls_to_monday_or_back_to_thursday() -> None:
    # Weekly Friday; Good Friday 2024-03-29 listed as a holiday.
    after = _ms("2024-03-25T00:00:00+00:00")
    base = {"frequency": "weekly", "day_rule": "friday", "holidays": ["2024-03-29"]}

    assert _runs("2024-03-25T00:00:00+00:00", _policy(**base, roll="next"), 2) == [
        "2024-04-01T09:40Z",  # Monday after the holiday
        "2024-04-05T09:40Z",  # the next Friday, back on rule
    ]
    assert _iso(next_run(after, _policy(**base, roll="previous"))) == "2024-03-28T09:40Z"


def test_next_run_when_holiday_follows_a_weekend_then_rolls_past_both() -> None:
    # Monthly day 1 in September 2024: Sunday the 1st, Monday the 2nd a holiday -> Tuesday the 3rd.
    policy = _policy(frequency="monthly", day_rule="1", holidays=["2024-09-02"])

    assert _iso(next_run(_ms("2024-08-15T00:00:00+00:00"), policy)) == "2024-09-03T09:40Z"


def test_next_run_when_previous_roll_lands_before_after_then_next_period() -> None:
    # Day 15 of June rolls back to Friday 14th; asked on Saturday the 15th, that run is past -> 15 July (Monday).
    policy = _policy(frequency="monthly", day_rule="15", roll="previous")

    assert _iso(next_run(_ms("2024-06-15T00:00:00+00:00"), policy)) == "2024-07-15T09:40Z"


def test_next_run_when_last_month_day_rolls_forward_into_the_asked_period_then_it_is_found() -> None:
    # Day 31 of May 2024 is Friday -> run. Asked 2024-06-01: June's "31" is the 30th (Sunday) -> next -> 1 July.
    policy = _policy(frequency="monthly", day_rule="31", roll="next")

    assert _runs("2024-05-30T00:00:00+00:00", policy, 3) == [
        "2024-05-31T09:40Z",
        "2024-07-01T09:40Z",
        "2024-07-31T09:40Z",
    ]


def test_roll_when_every_day_is_a_holiday_then_value_error() -> None:
    holidays = frozenset(date(2024, 1, 1) + timedelta(days=i) for i in range(400))

    with pytest.raises(ValueError, match="no trading day"):
        roll_to_trading_day(date(2024, 1, 1), "next", holidays)


# ----------------------------------------------------------------- DST


def test_next_run_when_new_york_springs_forward_then_same_local_time_one_hour_earlier_in_utc() -> None:
    # Fri 2024-03-08 15:10 EST = 20:10Z; DST starts Sunday 10th; Fri 15th 15:10 EDT = 19:10Z: 7 days - 1 hour.
    policy = _policy(frequency="weekly", day_rule="friday", timezone="America/New_York")
    before = _ms("2024-03-08T20:10:00+00:00")

    after = next_run(before, policy)

    assert _iso(after) == "2024-03-15T19:10Z"
    assert after - before == 7 * DAY_MS - HOUR_MS


def test_next_run_when_new_york_falls_back_then_same_local_time_one_hour_later_in_utc() -> None:
    # Fri 2024-11-01 15:10 EDT = 19:10Z; DST ends Sunday 3rd; Fri 8th 15:10 EST = 20:10Z: 7 days + 1 hour.
    policy = _policy(frequency="weekly", day_rule="friday", timezone="America/New_York")
    before = _ms("2024-11-01T19:10:00+00:00")

    after = next_run(before, policy)

    assert _iso(after) == "2024-11-08T20:10Z"
    assert after - before == 7 * DAY_MS + HOUR_MS


def test_next_run_when_kolkata_across_the_us_dst_weeks_then_always_0940_utc_seven_days_apart() -> None:
    # Asia/Kolkata keeps UTC+5:30: 15:10 IST is 09:40Z in every week, including the US DST weeks.
    policy = _policy(frequency="weekly", day_rule="friday", timezone="Asia/Kolkata")

    runs = _runs("2024-03-04T00:00:00+00:00", policy, 3)

    assert runs == ["2024-03-08T09:40Z", "2024-03-15T09:40Z", "2024-03-22T09:40Z"]


def test_local_time_when_skipped_by_spring_forward_then_moved_forward_by_the_gap() -> None:
    # 2024-03-10 02:30 does not exist in New York (02:00 EST -> 03:00 EDT): read as 03:30 EDT = 07:30Z.
    ms = local_epoch_ms(date(2024, 3, 10), time(2, 30), ZoneInfo("America/New_York"))

    assert _iso(ms) == "2024-03-10T07:30Z"


def test_local_time_when_repeated_by_fall_back_then_the_first_occurrence() -> None:
    # 2024-11-03 01:30 occurs twice in New York; the first is 01:30 EDT = 05:30Z (the second would be 06:30Z).
    ms = local_epoch_ms(date(2024, 11, 3), time(1, 30), ZoneInfo("America/New_York"))

    assert _iso(ms) == "2024-11-03T05:30Z"


# ----------------------------------------------------------------- month and quarter ends


def test_next_run_when_monthly_last_trading_day_then_month_end_or_the_friday_before_a_weekend() -> None:
    # Feb 2024: 29th (Thursday, leap year). Mar: 31st Sunday -> Fri 29th. Aug: 31st Saturday -> Fri 30th.
    policy = _policy(frequency="monthly", day_rule="last_trading_day")

    assert _runs("2024-02-01T00:00:00+00:00", policy, 2) == ["2024-02-29T09:40Z", "2024-03-29T09:40Z"]
    assert _iso(next_run(_ms("2024-08-01T00:00:00+00:00"), policy)) == "2024-08-30T09:40Z"


def test_next_run_when_month_end_is_a_holiday_then_the_trading_day_before() -> None:
    # August 2024 with Friday the 30th a holiday: Thursday the 29th.
    policy = _policy(frequency="monthly", holidays=["2024-08-30"])

    assert _iso(next_run(_ms("2024-08-01T00:00:00+00:00"), policy)) == "2024-08-29T09:40Z"


def test_next_run_when_monthly_first_trading_day_then_first_weekday_not_a_holiday() -> None:
    # September 2024: 1st Sunday -> Monday 2nd; with the 2nd a holiday -> Tuesday 3rd.
    after = _ms("2024-08-31T00:00:00+00:00")

    assert _iso(next_run(after, _policy(frequency="monthly", day_rule="first_trading_day"))) == "2024-09-02T09:40Z"
    policy = _policy(frequency="monthly", day_rule="first_trading_day", holidays=["2024-09-02"])
    assert _iso(next_run(after, policy)) == "2024-09-03T09:40Z"


def test_next_run_when_quarterly_default_then_last_trading_day_of_mar_jun_sep_dec() -> None:
    # 2024: Mar 31 Sunday -> Fri 29 (a holiday here) -> Thu 28; Jun 30 Sunday -> Fri 28; Sep 30 Monday;
    # Dec 31 Tuesday; 2025: Mar 31 Monday.
    policy = _policy(frequency="quarterly", holidays=["2024-03-29"])

    assert _runs("2024-01-01T00:00:00+00:00", policy, 5) == [
        "2024-03-28T09:40Z",
        "2024-06-28T09:40Z",
        "2024-09-30T09:40Z",
        "2024-12-31T09:40Z",
        "2025-03-31T09:40Z",
    ]


def test_next_run_when_quarterly_first_trading_day_then_first_of_jan_apr_jul_oct() -> None:
    # 2024-01-01 (Monday) is a holiday here -> Jan 2; Apr 1 Monday; Jul 1 Monday.
    policy = _policy(frequency="quarterly", day_rule="first_trading_day", holidays=["2024-01-01"])

    assert _runs("2023-12-31T00:00:00+00:00", policy, 3) == [
        "2024-01-02T09:40Z",
        "2024-04-01T09:40Z",
        "2024-07-01T09:40Z",
    ]


# ----------------------------------------------------------------- custom days and bad rules


def test_next_run_when_custom_every_10_days_from_a_friday_then_grid_rolled_off_weekends() -> None:
    # From Fri 2024-01-05: Jan 15 (Mon), Jan 25 (Thu), Feb 4 (Sun -> Mon Feb 5), Feb 14 (Wed).
    policy = _policy(frequency="custom_days", every_days=10, day_rule="2024-01-05")

    assert _runs("2024-01-05T12:00:00+00:00", policy, 4) == [
        "2024-01-15T09:40Z",
        "2024-01-25T09:40Z",
        "2024-02-05T09:40Z",
        "2024-02-14T09:40Z",
    ]


def test_next_run_when_custom_days_asked_before_the_start_then_the_start_date() -> None:
    policy = _policy(frequency="custom_days", every_days=10, day_rule="2024-01-05")

    assert _iso(next_run(_ms("2023-06-01T00:00:00+00:00"), policy)) == "2024-01-05T09:40Z"


def test_next_run_when_custom_days_policy_has_start_date_then_it_anchors_the_grid() -> None:
    policy = _policy(frequency="custom_days", every_days=7, start_date="2024-01-03")

    assert _iso(next_run(_ms("2024-01-04T00:00:00+00:00"), policy)) == "2024-01-10T09:40Z"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"frequency": "weekly", "day_rule": "someday"}, "weekday"),
        ({"frequency": "monthly", "day_rule": "32"}, "day 1-31"),
        ({"frequency": "custom_days", "day_rule": "friday"}, "ISO start date"),
        ({"time_local": "25:99"}, "HH:MM"),
        ({"holidays": ["2024-13-01"]}, "ISO dates"),
    ],
)
def test_next_run_when_rule_invalid_then_value_error_names_the_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        next_run(0, _policy(**overrides))


# ----------------------------------------------------------------- properties

_POLICIES = [
    _policy(frequency="weekly", day_rule="friday", timezone="America/New_York", holidays=["2024-03-29"]),
    _policy(frequency="weekly", day_rule="saturday", roll="previous", timezone="Europe/London"),
    _policy(frequency="monthly", day_rule="31", roll="previous", timezone="Asia/Kolkata"),
    _policy(frequency="monthly", day_rule="first_trading_day", timezone="America/New_York"),
    _policy(frequency="quarterly", timezone="Australia/Sydney", holidays=["2024-12-31", "2025-03-31"]),
    _policy(frequency="custom_days", every_days=3, timezone="America/New_York"),
]


@settings(max_examples=300, deadline=None)
@given(st.integers(_ms("2020-01-01T00:00:00+00:00"), _ms("2030-01-01T00:00:00+00:00")), st.sampled_from(_POLICIES))
def test_property_when_any_instant_then_next_run_is_later_on_a_trading_day_at_local_time_and_none_skipped(
    after: int, policy: RebalancePolicy
) -> None:
    run = next_run(after, policy)

    local = datetime.fromtimestamp(run / 1000, ZoneInfo(policy.timezone))
    holidays = {date.fromisoformat(d) for d in policy.holidays}
    assert run > after
    assert (local.hour, local.minute) == (15, 10)
    assert local.weekday() < 5 and local.date() not in holidays
    assert next_run(run - 1, policy) == run  # nothing between: asking just before returns the same run
    assert next_run(after + (run - after) // 2, policy) == run
