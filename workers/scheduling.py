"""Registering every app's django-q2 schedules (``manage.py register_schedules``, run at
start-up, and again when the runtime config is saved).

Each app declares its own in ``<app>/schedules.py`` (``SCHEDULES``, a list of ``Scheduled``
or plain tuples of the same fields); ``config/schedules.py`` assembles them and the
``AGENT_FACTORY_SCHEDULES`` setting names that assembler, so this module knows no app.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import Schedule

REGISTER_LOCK_KEY = 0x4146_5343  # "AFSC": two processes starting at once register once


class Scheduled(NamedTuple):
    """One schedule. Functions are named by dotted path, so declaring one imports no code;
    missed runs are never replayed (``Q_CLUSTER["catch_up"] = False``): each function is
    safe to run late."""

    name: str
    func: str
    kind: str  # Schedule.MINUTES ("I"), HOURLY ("H") or DAILY ("D")
    every: int | str | None  # minutes for "I", "HH:MM" UTC for "D", else None
    # Asked at each registration: False removes the schedule (e.g. an opt-in setting).
    enabled_if: Callable[[], bool] | None = None


def declared_schedules() -> list[Scheduled]:
    """Every app's schedules, from the assembler the settings name; names are unique."""
    declared = [Scheduled(*entry) for entry in import_string(settings.AGENT_FACTORY_SCHEDULES)()]
    names = [entry.name for entry in declared]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"Two apps declare the schedule(s) {', '.join(duplicated)}.")
    return declared


def first_run(kind: str, every, now: dt.datetime) -> dt.datetime:
    """When a new schedule first runs: now, except a daily one, at its next HH:MM (UTC).

    (django-q2 would otherwise run a new daily schedule at once: for the nightly cleanup
    that means destroying the app when the setting is switched on, not at 03:00.)
    """
    if kind != Schedule.DAILY:
        return now
    hour, minute = (int(part) for part in every.split(":"))
    at = now.astimezone(dt.UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return at if at > now else at + dt.timedelta(days=1)


def register_schedules(now: dt.datetime | None = None) -> dict:
    """Create or update every enabled schedule by name; idempotent (catch-up is off
    cluster-wide). A schedule whose ``enabled_if`` says no is removed."""
    now = now or timezone.now()
    declared = declared_schedules()
    wanted = [entry for entry in declared if entry.enabled_if is None or entry.enabled_if()]
    switched_off = [entry.name for entry in declared if entry not in wanted]
    created = updated = unchanged = 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [REGISTER_LOCK_KEY])
        for name, func, kind, every, _ in wanted:
            fields = {
                "func": func,
                "schedule_type": kind,
                "repeats": -1,
                "minutes": every if kind == Schedule.MINUTES else None,
                "cron": None,
            }
            rows = list(Schedule.objects.select_for_update().filter(name=name).order_by("pk"))
            for extra in rows[1:]:  # duplicates (an older racy registration) run twice
                extra.delete()
            if not rows:
                Schedule.objects.create(name=name, next_run=first_run(kind, every, now), **fields)
                created += 1
                continue
            row = rows[0]
            changed = {k: v for k, v in fields.items() if getattr(row, k) != v}
            if not changed:
                unchanged += 1
                continue
            if "schedule_type" in changed:
                changed["next_run"] = first_run(kind, every, now)
            Schedule.objects.filter(pk=row.pk).update(**changed)
            updated += 1
        removed, _ = Schedule.objects.filter(name__in=switched_off).delete()
    return {"created": created, "updated": updated, "unchanged": unchanged, "removed": removed}
