"""Slots in IANA timezones (SPEC §14): DST gaps and overlaps, month ends, weekdays and
midnight, as a table of "computed after X → runs at Y" (UTC)."""

from __future__ import annotations

import datetime as dt

import pytest

from agents.pushing.schedule import (
    ScheduleError,
    canonical_timezone,
    last_due,
    next_run_after,
    parse_slot,
)


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def daily(time):
    return ("daily", {"time": time})


def weekly(weekday, time):
    return ("weekly", {"weekday": weekday, "time": time})


def monthly(day, time):
    return ("monthly", {"day": day, "time": time})


TABLE = [
    # zone, schedule, computed after, runs at, why
    ("Europe/Rome", daily("09:00"), "2026-03-28T10:00Z", "2026-03-29T07:00Z", "09:00 CEST"),
    ("Europe/Rome", daily("09:00"), "2026-10-24T07:00Z", "2026-10-25T08:00Z", "09:00 CET"),
    # Spring forward: 02:30 does not exist on 29 March; the gap ends at 03:00 CEST.
    ("Europe/Rome", daily("02:30"), "2026-03-28T10:00Z", "2026-03-29T01:00Z", "gap end"),
    ("Europe/Rome", daily("02:30"), "2026-03-29T01:00Z", "2026-03-30T00:30Z", "day after"),
    # Fall back: 02:30 happens twice on 25 October; only the first (CEST) runs.
    ("Europe/Rome", daily("02:30"), "2026-10-24T10:00Z", "2026-10-25T00:30Z", "first of two"),
    ("Europe/Rome", daily("02:30"), "2026-10-25T00:30Z", "2026-10-26T01:30Z", "once that day"),
    ("America/New_York", daily("02:30"), "2026-03-07T12:00Z", "2026-03-08T07:00Z", "gap end"),
    ("America/New_York", daily("02:30"), "2026-03-08T07:00Z", "2026-03-09T06:30Z", "EDT"),
    ("America/New_York", daily("01:30"), "2026-10-31T12:00Z", "2026-11-01T05:30Z", "first"),
    ("America/New_York", daily("01:30"), "2026-11-01T05:30Z", "2026-11-02T06:30Z", "once"),
    ("America/New_York", daily("02:30"), "2026-10-31T12:00Z", "2026-11-01T07:30Z", "EST"),
    ("America/New_York", weekly(5, "18:00"), "2026-03-06T23:00Z", "2026-03-13T22:00Z", "EDT"),
    # Southern hemisphere: spring in September, fall in April.
    ("Pacific/Auckland", daily("02:30"), "2026-09-26T00:00Z", "2026-09-26T14:00Z", "gap end"),
    ("Pacific/Auckland", daily("02:30"), "2026-09-26T14:00Z", "2026-09-27T13:30Z", "NZDT"),
    ("Pacific/Auckland", daily("02:30"), "2026-04-04T00:00Z", "2026-04-04T13:30Z", "first"),
    ("Pacific/Auckland", daily("02:30"), "2026-04-04T13:30Z", "2026-04-05T14:30Z", "once"),
    # Lord Howe moves its clocks by 30 minutes: 02:00 → 02:30 on 4 Oct, 02:00 → 01:30 on 5 Apr.
    ("Australia/Lord_Howe", daily("02:15"), "2026-10-03T00:00Z", "2026-10-03T15:30Z", "gap"),
    ("Australia/Lord_Howe", daily("02:30"), "2026-10-03T00:00Z", "2026-10-03T15:30Z", "exists"),
    ("Australia/Lord_Howe", daily("02:15"), "2026-10-03T15:30Z", "2026-10-04T15:15Z", "+11"),
    ("Australia/Lord_Howe", daily("01:45"), "2026-04-04T00:00Z", "2026-04-04T14:45Z", "first"),
    ("Australia/Lord_Howe", daily("01:45"), "2026-04-04T14:45Z", "2026-04-05T15:15Z", "once"),
    # Month ends: 'last' in a leap February, day 31 clamped (no month skipped, no drift).
    ("Europe/Rome", monthly("last", "18:00"), "2028-02-10T00:00Z", "2028-02-29T17:00Z", "leap"),
    ("Europe/Rome", monthly("last", "18:00"), "2026-02-10T00:00Z", "2026-02-28T17:00Z", "28"),
    ("Europe/Rome", monthly("last", "18:00"), "2028-02-29T17:00Z", "2028-03-31T16:00Z", "CEST"),
    ("UTC", monthly(31, "10:00"), "2026-01-31T10:00Z", "2026-02-28T10:00Z", "clamped"),
    ("UTC", monthly(31, "10:00"), "2026-02-28T10:00Z", "2026-03-31T10:00Z", "no drift"),
    ("UTC", monthly(31, "10:00"), "2026-03-31T10:00Z", "2026-04-30T10:00Z", "30 days"),
    ("UTC", monthly(29, "10:00"), "2028-02-01T00:00Z", "2028-02-29T10:00Z", "leap 29th"),
    ("UTC", monthly(29, "10:00"), "2027-02-01T00:00Z", "2027-02-28T10:00Z", "clamped 29th"),
    # ISO weekdays: 7 is Sunday, 1 Monday (1 Jan 2026 is a Thursday).
    ("Europe/Rome", weekly(7, "09:00"), "2026-01-01T10:00Z", "2026-01-04T08:00Z", "Sunday"),
    ("Europe/Rome", weekly(1, "09:00"), "2026-01-01T10:00Z", "2026-01-05T08:00Z", "Monday"),
    ("Europe/Rome", weekly(4, "09:00"), "2026-01-01T07:00Z", "2026-01-01T08:00Z", "same day"),
    ("Europe/Rome", weekly(4, "09:00"), "2026-01-01T08:00Z", "2026-01-08T08:00Z", "strict"),
    # Midnight slots fire on the named local day.
    ("UTC", weekly(1, "00:30"), "2026-01-01T10:00Z", "2026-01-05T00:30Z", "Monday 00:30"),
    ("Asia/Tokyo", monthly(1, "00:30"), "2026-01-20T12:00Z", "2026-01-31T15:30Z", "1 Feb JST"),
    ("Europe/Rome", daily("00:00"), "2026-01-01T10:00Z", "2026-01-01T23:00Z", "midnight"),
    ("America/New_York", weekly(1, "00:00"), "2026-01-01T10:00Z", "2026-01-05T05:00Z", "Mon"),
    ("Europe/Rome", monthly("last", "00:30"), "2026-02-10T00:00Z", "2026-02-27T23:30Z", "28th"),
    ("UTC", daily("08:00"), "2026-01-01T07:59:59Z", "2026-01-01T08:00Z", "just before"),
    ("UTC", daily("08:00"), "2026-01-01T08:00Z", "2026-01-02T08:00Z", "not the same instant"),
    ("Asia/Kathmandu", daily("09:00"), "2026-01-01T00:00Z", "2026-01-01T03:15Z", "+05:45"),
]


@pytest.mark.parametrize(
    "zone, schedule, after, expected, why", TABLE, ids=[f"{r[0]}-{r[4]}-{r[2]}" for r in TABLE]
)
def test_next_run(zone, schedule, after, expected, why):
    slot = parse_slot(schedule[0], zone, schedule[1])
    assert next_run_after(slot, utc(after)) == utc(expected), why


def test_each_day_of_a_transition_week_runs_exactly_once():
    """Walking a daily 02:30 job through both Rome transitions: one run per local day."""
    slot = parse_slot("daily", "Europe/Rome", {"time": "02:30"})
    for start in ("2026-03-25T00:00Z", "2026-10-21T00:00Z"):
        at, runs = utc(start), []
        for _ in range(8):
            at = next_run_after(slot, at)
            runs.append(at)
        days = [r.astimezone(slot.zone).date() for r in runs]
        assert len(set(days)) == 8 and days == sorted(days)
        assert all(
            later - earlier >= dt.timedelta(hours=23)
            for earlier, later in zip(runs, runs[1:], strict=False)
        )


def test_manual_has_no_next_run():
    assert next_run_after(parse_slot("manual", "UTC", {}), utc("2026-01-01T00:00Z")) is None


def test_catch_up_fires_the_latest_due_slot_once():
    slot = parse_slot("daily", "UTC", {"time": "08:00"})
    latest, missed = last_due(slot, utc("2026-01-01T08:00Z"), utc("2026-01-04T09:00Z"))
    assert latest == utc("2026-01-04T08:00Z") and missed == 3
    assert last_due(slot, utc("2026-01-04T08:00Z"), utc("2026-01-04T08:01Z")) == (latest, 0)


def test_timezones_are_canonicalised_case_insensitively():
    assert canonical_timezone("europe/rome") == "Europe/Rome"
    assert canonical_timezone(" UTC ") == "UTC"


BAD = [
    ("daily", "UTC", {"time": "8:00"}, "Invalid time '8:00'"),
    ("daily", "UTC", {"time": "24:00"}, "Invalid time"),
    ("daily", "UTC", {"time": "08:60"}, "Invalid time"),
    ("daily", "UTC", {"time": "08:00:00"}, "Invalid time"),
    ("daily", "UTC", {"time": "٠٨:٠٠"}, "Invalid time"),  # Arabic-Indic digits
    ("daily", "UTC", {}, "needs schedule.time"),
    ("daily", "UTC", {"time": "08:00", "weekday": 1}, "do not apply"),
    ("weekly", "UTC", {"time": "08:00", "weekday": 0}, "weekday must be in range 1..7"),
    ("weekly", "UTC", {"time": "08:00", "weekday": 8}, "weekday must be in range 1..7"),
    ("weekly", "UTC", {"time": "08:00", "weekday": 1.5}, "weekday must be in range 1..7"),
    ("weekly", "UTC", {"time": "08:00", "weekday": True}, "weekday must be in range 1..7"),
    ("weekly", "UTC", {"time": "08:00"}, "weekday must be in range 1..7"),
    ("monthly", "UTC", {"time": "08:00", "day": 32}, "day must be 1..31 or 'last'"),
    ("monthly", "UTC", {"time": "08:00", "day": "Last"}, "day must be 1..31 or 'last'"),
    ("monthly", "UTC", {"time": "08:00", "day": 0}, "day must be 1..31 or 'last'"),
    ("hourly", "UTC", {"time": "08:00"}, "Periodicity must be one of"),
    ("daily", "", {"time": "08:00"}, "Timezone is required"),
    ("daily", "Mars/Olympus", {"time": "08:00"}, "Invalid timezone 'Mars/Olympus'"),
    ("daily", "+02:00", {"time": "08:00"}, "Invalid timezone"),
    ("manual", "UTC", {"time": "08:00"}, "do not apply"),
]


@pytest.mark.parametrize("periodicity, zone, schedule, message", BAD)
def test_bad_schedules_are_refused_with_the_reason(periodicity, zone, schedule, message):
    with pytest.raises(ScheduleError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_slot(periodicity, zone, schedule)


def test_weekday_seven_point_zero_is_seven():
    assert parse_slot("weekly", "UTC", {"time": "08:00", "weekday": 7.0}).weekday == 7
