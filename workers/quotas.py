"""Worker-side quotas (SPEC §23): history a job may append, snapshots a worker may prepare.

Refusals are answered to the worker (413 ``too_large``, 429 ``throttled``) and logged; they
write no audit row, because a misbehaving worker could otherwise flood the audit table —
the log line carries the worker, the job and the limit.
"""

from __future__ import annotations

import datetime as dt
import logging
import math

from django.utils import timezone

from agents.errors import DomainError
from agents.models import RuntimeConfig
from workers.models import DataSnapshot, Worker

logger = logging.getLogger(__name__)

PREPARE_WINDOW = dt.timedelta(minutes=1)


class HistoryTooLarge(DomainError, ValueError):
    """A job's history would pass its entry or byte cap; nothing was appended."""

    status_code = 413
    code = "too_large"


class PrepareThrottled(Exception):
    def __init__(self, detail: str, retry_after: int):
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


def content_bytes(content: str) -> int:
    return len(content.encode("utf-8", "surrogatepass"))


def check_history(message_id: int, stored: list[str], adding: list[str]) -> None:
    """Raise unless the job's stored history entries (their contents) plus ``adding`` stay
    within the caps. ``stored`` holds every entry the job has appended so far, through
    ``complete`` and ``conversations/<id>/messages`` alike (both file entries under the
    job's message id)."""
    config = RuntimeConfig.get_cached()
    entries = len(stored) + len(adding)
    if entries > config.history_entries_per_job:
        raise _too_large(
            f"Job {message_id} may append at most {config.history_entries_per_job} history "
            f"entries; it has {len(stored)} and this adds {len(adding)}.",
        )
    size = sum(map(content_bytes, stored)) + sum(map(content_bytes, adding))
    if size > config.history_bytes_per_job:
        raise _too_large(
            f"Job {message_id} may append at most {config.history_bytes_per_job} bytes of "
            f"history; this would bring it to {size}.",
        )


def _too_large(detail: str) -> HistoryTooLarge:
    logger.warning("History append refused: %s", detail)
    return HistoryTooLarge(detail)


def check_prepare_rate(worker: Worker, now: dt.datetime | None = None) -> None:
    """Raise unless ``worker`` prepared fewer than the allowed snapshots in the last minute.

    Call inside the transaction that creates the snapshot, with the worker's row locked,
    so two concurrent prepares of one worker cannot both take the last slot.
    """
    now = now or timezone.now()
    limit = RuntimeConfig.get_cached().snapshot_prepares_per_minute
    recent = list(
        DataSnapshot.objects.filter(worker_id=worker.worker_id, created_at__gt=now - PREPARE_WINDOW)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:limit]
    )
    if len(recent) < limit:
        return
    # The slot frees when the oldest of the last `limit` prepares leaves the window.
    retry_after = max(1, math.ceil((recent[-1] + PREPARE_WINDOW - now).total_seconds()))
    detail = (
        f"Worker {worker.worker_id} may prepare at most {limit} snapshots per minute; "
        f"retry in {retry_after} s."
    )
    logger.warning("Snapshot prepare refused: %s", detail)
    raise PrepareThrottled(detail, retry_after)
