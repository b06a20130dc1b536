"""Shared plumbing for the pushing commands: ``--json`` output and one-line errors."""

from __future__ import annotations

import datetime as dt

from agents.management.base import Command as BaseCommand
from agents.management.base import JsonOutput
from agents.pushing.services import PushError


def job_view(job) -> dict:
    return {
        "id": job.pk,
        "target": job.target,
        "consumer_user_id": job.consumer_user_id,
        "agent_key": job.agent.agent_key if job.agent_id else None,
        "title": job.title,
        "text": job.text,
        "periodicity": job.periodicity,
        "timezone": job.timezone,
        "schedule": job.schedule,
        "enabled": job.enabled,
        "next_run_at": _iso(job.next_run_at),
        "last_run_at": _iso(job.last_run_at),
        "last_run_key": job.last_run_key,
    }


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


class PushCommand(JsonOutput, BaseCommand):
    errors = (PushError,)
