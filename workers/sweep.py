"""The lease sweeper (SPEC §6.3): processing jobs whose lease ran out go back to the queue.

Runs every minute (``release_stuck_jobs``, the schedule), in every reconcile pass, and, for
one conversation, inside a claim that finds an expired job in its way (``release_expired``).
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.db.models import Max, OuterRef, Subquery
from django.utils import timezone

from agents.models import RuntimeConfig
from workers.dead_letters import dead_lettered
from workers.lifecycle import live_worker_cutoff
from workers.models import ConversationQueue, Message, Worker

LEASE_EXPIRED_ERROR = "lease expired"
SWEEP_BATCH = 500


def release_expired(message: Message, now: dt.datetime) -> str:
    """Requeue (or dead-letter) a processing message whose lease is gone; counts an attempt."""
    attempts = message.attempts + 1
    fields = {
        "attempts": attempts,
        "last_error": LEASE_EXPIRED_ERROR,
        "lease_id": "",
        "lease_expires_at": None,
        "claimed_by": "",
    }
    if attempts >= message.max_attempts:
        fields.update(status=Message.DEAD_LETTER, dead_lettered_at=now)
    else:
        # scheduled_for is left as it was (already due): the job is ready at once and keeps
        # its place ahead of later messages of its conversation.
        fields.update(status=Message.QUEUED, next_retry_at=None)
    Message.objects.filter(pk=message.pk).update(**fields)
    if fields["status"] == Message.DEAD_LETTER:
        dead_lettered([message.pk], now)
    return fields["status"]


def sweep_expired_leases(now: dt.datetime | None = None) -> dict:
    """Requeue processing messages whose lease expired (or is missing), counting an attempt.

    Workers left with no job by the sweep lose their assignment unless they are still live,
    so another worker can serve the conversation.
    """
    config = RuntimeConfig.get()
    requeued = dead_lettered = 0
    with transaction.atomic():
        now = now or timezone.now()
        expired_rows = Message.objects.with_lost_lease(now)
        # Lock order is worker, then message, as in a claim (which locks its worker first
        # and may then wait for a processing message of its conversation). Locking the
        # messages first could deadlock with such a claim. A worker busy elsewhere right now
        # is skipped, with its messages, until the next sweep (or its own claim requeues
        # them).
        holders = set(
            expired_rows.exclude(claimed_by="").values_list("claimed_by", flat=True)[:SWEEP_BATCH]
        )
        locked = set(
            Worker.objects.select_for_update(skip_locked=True)
            .filter(worker_id__in=holders)
            .values_list("worker_id", flat=True)
        )
        busy = set(
            Worker.objects.filter(worker_id__in=holders - locked).values_list(
                "worker_id", flat=True
            )
        )
        expired = list(
            expired_rows.exclude(claimed_by__in=busy)
            .select_for_update(skip_locked=True)
            .order_by("lease_expires_at")[:SWEEP_BATCH]
        )
        worker_ids = {m.claimed_by for m in expired if m.claimed_by}
        for message in expired:
            if release_expired(message, now) == Message.DEAD_LETTER:
                dead_lettered += 1
            else:
                requeued += 1
        if worker_ids:
            _idle_workers_left_without_a_job(worker_ids, now, config)
    _catch_up_busy_markers(now)
    return {"requeued": requeued, "dead_lettered": dead_lettered}


def _idle_workers_left_without_a_job(worker_ids: set[str], now: dt.datetime, config) -> None:
    held = Worker.objects.filter(worker_id__in=worker_ids)
    held.update(load=0, assigned_lease_id="", idle_since=now)
    # Left with no job, the worker starts its idle clock like after a completion, so a live
    # worker whose job expired is still drained once it stays idle.
    held.filter(scheduled_shutdown_at__isnull=True).update(
        scheduled_shutdown_at=now + dt.timedelta(seconds=config.idle_timeout_seconds)
    )
    held.exclude(pk__in=Worker.objects.live(live_worker_cutoff(now, config))).update(
        assigned_conversation=None, assigned_agent_key="", assigned_at=None
    )


def _catch_up_busy_markers(now: dt.datetime) -> None:
    """Busy conversations whose marker lease ran out while heartbeats kept the real one
    alive: copy the real lease over, so an unassigned claim stops looking at them. Only a
    speed matter (the claim checks the real lease anyway); a lease only grows, so the copy
    is never later than the real one."""
    lease = (
        Message.objects.filter(
            conversation_id=OuterRef("conversation_id"), status=Message.PROCESSING
        )
        .values("conversation_id")
        .annotate(latest=Max("lease_expires_at"))
        .values("latest")
    )
    ConversationQueue.objects.filter(busy=True, busy_until__lte=now).update(
        busy_until=Subquery(lease)
    )
