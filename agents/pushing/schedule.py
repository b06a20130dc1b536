"""Slots of a push job in its IANA timezone: validation and the next run (SPEC §14).

Pure functions over ``zoneinfo``; no database. The rules, where wall clocks get awkward:

- A slot is a local wall time (HH:mm) on a local day, so it keeps its local hour across
  DST changes (09:00 is 09:00 in winter and in summer).
- A local time that does not exist (the spring-forward gap: 02:30 in Rome on the last
  Sunday of March) runs at the **first valid instant after the gap** — the transition
  itself (03:00 CEST = 01:00 UTC). It runs that day, once, neither skipped nor an hour late.
- A local time that happens twice (fall back) runs at its **first occurrence** only.
- Monthly day 29–31 is **clamped** to the month's last day (31 → 30 April, 28/29 Feb);
  ``last`` is the last day. No month is skipped.
- Weekday is ISO: 1 = Monday … 7 = Sunday. Midnight slots fire on the named day (the
  original fired weekly/monthly 00:xx slots a day early).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
RECURRING = ("daily", "weekly", "monthly")
SCAN_DAYS = 400  # more than a year of local days: any slot recurs within it
MAX_CATCH_UP = 5000  # slots looked at when finding the last one missed


class ScheduleError(ValueError):
    """Invalid schedule input; the text says which field and why."""


@dataclass(frozen=True)
class Slot:
    periodicity: str
    timezone: str
    hour: int = 0
    minute: int = 0
    weekday: int | None = None  # ISO, weekly only
    day: int | str | None = None  # 1..31 or "last", monthly only

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    return {name.lower(): name for name in available_timezones()}


def canonical_timezone(value) -> str:
    """The IANA name, accepted in any letter case (``europe/rome`` → ``Europe/Rome``)."""
    if not isinstance(value, str) or not value.strip():
        raise ScheduleError("Timezone is required.")
    name = _zone_names().get(value.strip().lower())
    if name is None:
        raise ScheduleError(f"Invalid timezone '{value}': not an IANA name like Europe/Rome.")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"Invalid timezone '{value}'.")
    return name


def parse_time(value) -> tuple[int, int]:
    match = TIME_RE.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ScheduleError(f"Invalid time '{value}', expected HH:mm (00:00–23:59).")
    return int(match.group(1)), int(match.group(2))


def _whole_number(value, field: str, low: int, high: int, message: str) -> int:
    # bool is an int in Python; 7.0 is accepted as 7 (JSON numbers), 1.5 is not.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ScheduleError(message)
    try:
        number = float(value) if not isinstance(value, int) else value
    except ValueError:
        raise ScheduleError(message)
    if number != int(number) or not low <= int(number) <= high:
        raise ScheduleError(message)
    return int(number)


def parse_slot(periodicity: str, timezone: str, schedule: dict | None) -> Slot:
    """Validate a job's schedule (SPEC §15 shape) and return its slot; errors name the field."""
    if periodicity not in ("manual", *RECURRING):
        raise ScheduleError("Periodicity must be one of manual, daily, weekly, monthly.")
    zone = canonical_timezone(timezone)
    schedule = schedule or {}
    if not isinstance(schedule, dict):
        raise ScheduleError("Schedule must be an object.")
    allowed = {"manual": set(), "daily": {"time"}, "weekly": {"time", "weekday"}}
    allowed["monthly"] = {"time", "day"}
    unknown = sorted(set(schedule) - allowed[periodicity])
    if unknown:
        raise ScheduleError(
            f"Schedule field(s) {', '.join(unknown)} do not apply to a {periodicity} job."
        )
    if periodicity == "manual":
        return Slot("manual", zone)
    if "time" not in schedule:
        raise ScheduleError(f"A {periodicity} job needs schedule.time (HH:mm).")
    hour, minute = parse_time(schedule["time"])
    if periodicity == "daily":
        return Slot("daily", zone, hour, minute)
    if periodicity == "weekly":
        weekday = _whole_number(
            schedule.get("weekday"),
            "weekday",
            1,
            7,
            "Weekly schedule weekday must be in range 1..7 (1 = Monday, 7 = Sunday).",
        )
        return Slot("weekly", zone, hour, minute, weekday=weekday)
    day = schedule.get("day")
    if day != "last":
        day = _whole_number(day, "day", 1, 31, "Monthly schedule day must be 1..31 or 'last'.")
    return Slot("monthly", zone, hour, minute, day=day)


def slot_of(job) -> Slot:
    """The slot of anything shaped like a PushJob (periodicity, timezone, schedule)."""
    return parse_slot(job.periodicity, job.timezone, job.schedule)


def local_to_utc(day: dt.date, hour: int, minute: int, zone: ZoneInfo) -> dt.datetime:
    """The UTC instant of a local wall time: its first occurrence when it happens twice,
    the end of the gap when it does not happen at all."""
    wall = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
    first = wall.replace(fold=0).astimezone(dt.UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return first  # exists (fold=0 is the first occurrence when it is ambiguous)
    # In a gap: fold=0 reads it with the offset before the change (an instant after the
    # transition), fold=1 with the offset after it (an instant before). The transition is
    # the first instant in between whose offset is the new one.
    low = wall.replace(fold=1).astimezone(dt.UTC)
    high = first
    new_offset = high.astimezone(zone).utcoffset()
    while high - low > dt.timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == new_offset:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def _slot_day(slot: Slot, day: dt.date) -> dt.date | None:
    """The slot's local day in ``day``'s month/week, when ``day`` is that day."""
    if slot.periodicity == "daily":
        return day
    if slot.periodicity == "weekly":
        return day if day.isoweekday() == slot.weekday else None
    last = calendar.monthrange(day.year, day.month)[1]
    wanted = last if slot.day == "last" else min(int(slot.day), last)
    return day if day.day == wanted else None


def next_run_after(slot: Slot, after: dt.datetime) -> dt.datetime | None:
    """The first slot instant strictly after ``after`` (UTC); None for manual jobs."""
    if slot.periodicity == "manual":
        return None
    zone = slot.zone
    # Start a day early: a slot on the previous local day can still be ahead in UTC
    # only in theory (offsets differ by < 1 day), but it costs one step to be sure.
    day = after.astimezone(zone).date() - dt.timedelta(days=1)
    for _ in range(SCAN_DAYS):
        if _slot_day(slot, day) is not None:
            at = local_to_utc(day, slot.hour, slot.minute, zone)
            if at > after:
                return at
        day += dt.timedelta(days=1)
    raise ScheduleError("No run found within a year; the schedule cannot be satisfied.")


def last_due(slot: Slot, first_due: dt.datetime, now: dt.datetime) -> tuple[dt.datetime, int]:
    """The latest slot at or before ``now``, starting from a due ``first_due``, and how many
    earlier slots it passes over (a dispatcher that was down catches up once, not N times)."""
    latest, missed = first_due, 0
    for _ in range(MAX_CATCH_UP):
        following = next_run_after(slot, latest)
        if following is None or following > now:
            break
        latest, missed = following, missed + 1
    return latest, missed
