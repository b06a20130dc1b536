"""Errors of the external APIs the server calls (Telegram Bot API, Fly Machines API), kept
where an admin sees them: the dashboard's "recent errors" and their own list (SPEC §16, §24).

Before this table a Fly API error was visible only as a failed spawn, and a Telegram 5xx or
429 only on the outbox row it delayed. One row stands for a burst: the same (service,
operation, subject, status) within ``COALESCE_WINDOW`` raises ``count`` on the newest row
instead of inserting, so an outage costs one UPDATE per failed call and a handful of rows.
Rows older than ``RETENTION`` are pruned by a schedule.

Lives in agents (the ground floor) so that telegram and fly, which may not import each
other, both write here. Details never carry a secret: callers pass Telegram's description
or the Fly body already redacted of the token."""

from __future__ import annotations

import datetime as dt
import logging

from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

logger = logging.getLogger(__name__)

COALESCE_WINDOW = dt.timedelta(minutes=5)
RETENTION = dt.timedelta(days=14)


class ExternalApiError(models.Model):
    TELEGRAM, FLY = "telegram", "fly"
    SERVICE_CHOICES = [(TELEGRAM, "Telegram Bot API"), (FLY, "Fly Machines API")]

    service = models.CharField(max_length=10, choices=SERVICE_CHOICES)
    operation = models.CharField(max_length=80, help_text="Bot API method, or Fly HTTP call.")
    subject = models.CharField(
        max_length=120, blank=True, help_text="The agent (bot) or Fly app the call was for."
    )
    status_code = models.IntegerField(null=True, blank=True, help_text="Empty: network error.")
    detail = models.CharField(max_length=500)
    count = models.PositiveIntegerField(default=1, help_text="Calls that failed alike in a burst.")
    first_at = models.DateTimeField(default=timezone.now)
    last_at = models.DateTimeField(default=timezone.now)

    class Meta:
        app_label = "agents"
        ordering = ["-last_at", "-id"]
        verbose_name = "external API error"
        verbose_name_plural = "external API errors"
        indexes = [
            models.Index(fields=["-last_at", "-id"], name="api_error_recent_idx"),
            models.Index(
                fields=["service", "operation", "subject", "last_at"], name="api_error_burst_idx"
            ),
        ]

    def __str__(self) -> str:
        code = self.status_code if self.status_code is not None else "network"
        return f"{self.service} {self.operation} ({code})"


def record_api_error(
    service: str,
    operation: str,
    detail: str,
    *,
    subject: str = "",
    status_code: int | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Record one failed call. Never raises: losing an error record must not turn a handled
    API error into a crash. Runs in a savepoint, so a caller's transaction survives it."""
    now = now or timezone.now()
    subject, detail = str(subject)[:120], str(detail)[:500]
    try:
        with transaction.atomic():
            burst = ExternalApiError.objects.filter(
                service=service,
                operation=operation[:80],
                subject=subject,
                status_code=status_code,
                last_at__gte=now - COALESCE_WINDOW,
            ).order_by("-last_at")[:1]
            updated = ExternalApiError.objects.filter(pk__in=burst.values("pk")).update(
                count=F("count") + 1, last_at=now, detail=detail
            )
            if not updated:
                ExternalApiError.objects.create(
                    service=service,
                    operation=operation[:80],
                    subject=subject,
                    status_code=status_code,
                    detail=detail,
                    first_at=now,
                    last_at=now,
                )
    except Exception:  # noqa: BLE001 (a database refusal, or no database at all)
        logger.exception("Could not record the %s %s error.", service, operation)


def prune_api_errors(now: dt.datetime | None = None) -> int:
    """Drop rows whose last failure is older than ``RETENTION`` (a schedule)."""
    cutoff = (now or timezone.now()) - RETENTION
    deleted, _ = ExternalApiError.objects.filter(last_at__lt=cutoff).delete()
    return deleted
