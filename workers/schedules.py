"""Registering the django-q2 schedules of ``config.schedules`` (``manage.py
register_schedules``, run at start-up, and again when the runtime config is saved)."""

from __future__ import annotations

import datetime as dt

from django.db import connection, transaction
from django.utils import timezone
from django_q.models import Schedule

from agents.models import RuntimeConfig
from config.schedules import NIGHTLY_FLY_CLEANUP, SCHEDULES

REGISTER_LOCK_KEY = 0x4146_5343  # "AFSC": two processes starting at once register once


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
    """Create or update every schedule by name; idempotent (catch-up is off cluster-wide).

    The nightly Fly cleanup is registered only while ``fly_cleanup_nightly`` is on, and
    removed otherwise.
    """
    now = now or timezone.now()
    nightly = RuntimeConfig.get().fly_cleanup_nightly
    wanted = list(SCHEDULES) + ([NIGHTLY_FLY_CLEANUP] if nightly else [])
    created = updated = unchanged = 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [REGISTER_LOCK_KEY])
        for name, func, kind, every in wanted:
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
        removed = 0
        if not nightly:
            removed, _ = Schedule.objects.filter(name=NIGHTLY_FLY_CLEANUP[0]).delete()
    return {"created": created, "updated": updated, "unchanged": unchanged, "removed": removed}
