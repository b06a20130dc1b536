"""What every queue of outgoing deliveries shares (the Telegram outbox, SPEC §22, and the
host-app event webhooks, SPEC §15): claiming a row before the call, exponential backoff
after a failure, giving up with the reason, putting rows stuck in ``sending`` back, and the
admin's "send again". One definition, so both senders retry alike.

A row model is a ``DeliveryRow`` with its own ``status`` field
(pending|sending|sent-or-delivered|failed: the finished state's name is the model's).
"""

from __future__ import annotations

import datetime as dt

from django.db import models
from django.db.models import F
from django.utils import timezone

PENDING, SENDING, FAILED = "pending", "sending", "failed"


class DeliveryRow(models.Model):
    """The fields the functions below read and write, declared once for every row model."""

    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    sending_since = models.DateTimeField(null=True, blank=True)
    stuck_retries = models.PositiveIntegerField(
        default=0, help_text="Times found stuck in sending and sent again (possible duplicates)."
    )
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        abstract = True


def backoff_seconds(attempts: int, cap_seconds: float) -> float:
    """1, 2, 4, 8 … seconds after the 1st, 2nd, 3rd, 4th … failed attempt, at most ``cap``."""
    return min(cap_seconds, 2 ** max(0, attempts - 1))


def claim(model, pk: int, now: dt.datetime) -> bool:
    """Mark a pending row ``sending`` (one attempt more); False when another sender has it.

    A conditional UPDATE, so two senders never send the same row at once."""
    return bool(
        model.objects.filter(pk=pk, status=PENDING).update(
            status=SENDING, sending_since=now, attempts=F("attempts") + 1
        )
    )


def retry_later(
    model, pk: int, error: str, *, attempts: int, now: dt.datetime, give_up: bool, cap_seconds
) -> str:
    """After a failed attempt: back to ``pending`` after the backoff, or ``failed`` with the
    reason when ``give_up``. Returns ``retry`` or ``failed``."""
    if give_up:
        model.objects.filter(pk=pk).update(
            status=FAILED,
            sending_since=None,
            last_error=f"gave up after {attempts} attempts: {error}"[:500],
        )
        return "failed"
    delay = backoff_seconds(attempts, cap_seconds)
    model.objects.filter(pk=pk).update(
        status=PENDING,
        sending_since=None,
        next_attempt_at=now + dt.timedelta(seconds=delay),
        last_error=error[:500],
    )
    return "retry"


def fail(model, pk: int, reason: str) -> None:
    """A permanent refusal: ``failed`` with its reason, never retried by itself."""
    model.objects.filter(pk=pk).update(status=FAILED, sending_since=None, last_error=reason[:500])


def recover_stuck(model, now: dt.datetime, stuck_after: dt.timedelta) -> int:
    """Rows left in ``sending`` by a sender that died go back to the queue, counted: each
    may already have arrived (the one duplicate window)."""
    return model.objects.filter(status=SENDING, sending_since__lt=now - stuck_after).update(
        status=PENDING,
        sending_since=None,
        next_attempt_at=now,
        stuck_retries=F("stuck_retries") + 1,
    )


def reset_failed(model, row_ids, now: dt.datetime, **extra) -> list[int]:
    """Failed rows among ``row_ids`` back to ``pending`` with their attempts reset (the
    admin's "send again"); call inside a transaction. Returns the ids reset."""
    ids = list(
        model.objects.select_for_update()
        .filter(pk__in=list(row_ids), status=FAILED)
        .values_list("pk", flat=True)
    )
    if ids:
        model.objects.filter(pk__in=ids).update(
            status=PENDING, attempts=0, next_attempt_at=now, **extra
        )
    return ids
