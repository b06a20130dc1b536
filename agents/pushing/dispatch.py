"""The push dispatcher (every minute, SPEC §14): claim the due slots, then enqueue them.

Two steps, each safe to repeat and to run on several machines at once:

1. **Claim** (``claim_due_runs``): in one transaction, lock the due jobs (``SKIP LOCKED``:
   a second dispatcher takes other jobs or none), write one PushDispatch per job and slot —
   unique per (job, run key) in the database, so a slot can never be claimed twice — write
   one PushBroadcastDispatch per bound user for jobs aimed at an agent's users, and move
   each job to its next slot. A fixed number of queries whatever the number of jobs and
   targets (bulk reads and writes).
2. **Drain** (``drain_pending``): enqueue every pending row through
   ``workers.queue.enqueue_message`` (the one door into the queue; the agent writes the
   reply), in batches that lock their rows, and mark each enqueued (with the message id)
   or failed (with the reason). A crash between the steps leaves rows pending: the next
   minute's run enqueues them — nothing is dropped and nothing sent twice.

Catch-up: a dispatcher that was down fires each job **once**, for the latest slot that is
due, and records how many earlier slots it passed over (``missed_slots``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from agents import budget
from agents.models import Conversation
from agents.pushing import target_sql
from agents.pushing import targets as target_lookup
from agents.pushing.models import PushBroadcast, PushBroadcastDispatch, PushDispatch, PushJob
from agents.pushing.schedule import ScheduleError, last_due, next_run_after, slot_of
from workers.queue import EnqueueError, enqueue_message

logger = logging.getLogger(__name__)

CLAIM_LIMIT = 1000  # jobs per claim; more wait a minute (oldest slot first)
DRAIN_BATCH = 500
DRAIN_BUDGET_SECONDS = 50.0  # the schedule runs every minute: leave room for the next
TARGET_BATCH = 2000  # dispatch rows per INSERT (one per due job)


def run_key_for(slot_at: dt.datetime) -> str:
    return f"scheduled:{slot_at.astimezone(dt.UTC):%Y-%m-%dT%H:%MZ}"


def dispatch_push_jobs(now: dt.datetime | None = None, *, drain: bool = True) -> dict:
    """The schedule's entry point: claim what is due, then enqueue what is pending."""
    report = claim_due_runs(now or timezone.now())
    if drain:
        report.update(drain_pending())
    return report


def claim_due_runs(now: dt.datetime, limit: int = CLAIM_LIMIT) -> dict:
    report = {"scanned": 0, "claimed": 0, "skipped": 0, "failed": 0, "broadcast_targets": 0}
    try:
        return _claim(now, limit, report)
    except IntegrityError:
        # Another dispatcher claimed one of these slots between our read and our write (the
        # constraint said no): nothing of this pass was written; the next pass goes on.
        logger.info("Push claim lost a race on (job, run key); retrying next minute.")
        return {**report, "scanned": 0, "conflict": True}


def _claim(now: dt.datetime, limit: int, report: dict) -> dict:
    with transaction.atomic():
        jobs = list(
            PushJob.objects.filter(enabled=True, next_run_at__lte=now)
            .select_for_update(skip_locked=True)
            .order_by("next_run_at", "id")[:limit]
        )
        if not jobs:
            return report
        report["scanned"] = len(jobs)
        runs = {}  # job pk -> (slot instant, missed slots, run key)
        for job in jobs:
            try:
                slot_at, missed = last_due(slot_of(job), job.next_run_at, now)
            except ScheduleError:  # a schedule edited into nonsense outside the validators
                slot_at, missed = job.next_run_at, 0
            runs[job.pk] = (slot_at, missed, run_key_for(slot_at))
        taken = set(
            PushDispatch.objects.filter(
                job__in=jobs, run_key__in={run[2] for run in runs.values()}
            ).values_list("job_id", "run_key")
        )
        fresh = [job for job in jobs if (job.pk, runs[job.pk][2]) not in taken]
        report["skipped"] = len(jobs) - len(fresh)
        dispatches = _dispatch_rows(fresh, runs, now)
        PushDispatch.objects.bulk_create(dispatches, batch_size=TARGET_BATCH)
        report["claimed"] = len(dispatches)
        report["failed"] = sum(d.status == PushDispatch.FAILED for d in dispatches)
        report["broadcast_targets"] = sum(
            d.broadcast.total_targets for d in dispatches if d.broadcast is not None
        )
        for job in jobs:
            job.last_run_at, job.last_run_key = now, runs[job.pk][2]
            job.next_run_at = _next_or_none(job, now)
            job.updated_at = now
        PushJob.objects.bulk_update(
            jobs, ["next_run_at", "last_run_at", "last_run_key", "updated_at"]
        )
    return report


def _next_or_none(job: PushJob, now: dt.datetime) -> dt.datetime | None:
    try:
        return next_run_after(slot_of(job), now)
    except ScheduleError:
        logger.warning("Push job %s has an invalid schedule; it is paused.", job.pk)
        return None


def _dispatch_rows(jobs, runs, now) -> list[PushDispatch]:
    users = target_lookup.bindings_of_users(
        (job.tenant_id, job.consumer_user_id) for job in jobs if job.target == PushJob.USER
    )
    fan_out = [job for job in jobs if job.target == PushJob.AGENT_USERS]
    agents = target_lookup.agents_by_id(job.agent_id for job in fan_out)
    live = [job for job in fan_out if agents.get(job.agent_id) and agents[job.agent_id].enabled]
    broadcasts = create_broadcasts(
        [
            PushBroadcast(
                tenant_id=job.tenant_id,
                title=job.title,
                text=job.text,
                agent_keys=[agents[job.agent_id].agent_key],
                requested_by=f"push job #{job.pk}",
                requested_at=now,
            )
            for job in live
        ],
        [[job.agent_id] for job in live],
    )
    by_job = dict(zip([job.pk for job in live], broadcasts, strict=True))
    rows = []
    for job in jobs:
        slot_at, missed, run_key = runs[job.pk]
        row = PushDispatch(
            job=job,
            tenant_id=job.tenant_id,
            run_key=run_key,
            mode="scheduled",
            scheduled_for=slot_at,
            missed_slots=missed,
            created_at=now,
        )
        if job.target == PushJob.AGENT_USERS:
            if job.pk in by_job:
                row.status, row.broadcast = PushDispatch.BROADCAST, by_job[job.pk]
                row.agent_id = job.agent_id
            else:
                row.status = PushDispatch.FAILED
                row.error = f"Agent '{agents.get(job.agent_id) or job.agent_id}' is disabled."
        else:
            fill_user_target(row, job, users)
        rows.append(row)
    return rows


def fill_user_target(row: PushDispatch, job: PushJob, users: dict) -> None:
    """Point a dispatch at the job's user, through their active binding (the job follows the
    user when they rebind); no binding: failed, with the reason."""
    target = users.get((job.tenant_id, job.consumer_user_id))
    row.tenant_id, row.consumer_user_id = job.tenant_id, job.consumer_user_id
    if target is None:
        row.status = PushDispatch.FAILED
        row.error = f"No active agent binding for consumer user '{job.consumer_user_id}'."
        return
    for field, value in target.items():
        setattr(row, field, value)
    row.status = PushDispatch.PENDING


def create_broadcasts(broadcasts: list[PushBroadcast], agent_ids: list[list[int]]):
    """Insert broadcasts and one pending target row per active binding of their agents.

    Three queries whatever the number of broadcasts and users: the broadcasts, one
    INSERT … SELECT of the targets straight from the bindings (nothing travels through
    Python), and the per-broadcast totals.
    """
    if not broadcasts:
        return []
    created = PushBroadcast.objects.bulk_create(broadcasts)
    pairs = [(b.pk, pk) for b, ids in zip(created, agent_ids, strict=True) for pk in ids]
    if pairs:
        target_sql.insert_broadcast_targets(pairs, created[0].requested_at)
        totals = dict(
            PushBroadcastDispatch.objects.filter(broadcast__in=created)
            .values_list("broadcast_id")
            .annotate(n=Count("id"))
        )
        for broadcast in created:
            broadcast.total_targets = totals.get(broadcast.pk, 0)
        PushBroadcast.objects.bulk_update(created, ["total_targets"])
    return created


# The drain ------------------------------------------------------------------------------


def drain_pending(batch: int = DRAIN_BATCH, budget_seconds: float = DRAIN_BUDGET_SECONDS) -> dict:
    """Enqueue pending dispatch and broadcast rows until none is left or the time is up."""
    started = time.monotonic()
    report = {"enqueued": 0, "enqueue_failed": 0}
    for model in (PushDispatch, PushBroadcastDispatch):
        while time.monotonic() - started < budget_seconds:
            done = _drain_batch(model, batch)
            if done is None:
                break
            report["enqueued"] += done[0]
            report["enqueue_failed"] += done[1]
    return report


def _drain_batch(model, batch: int) -> tuple[int, int] | None:
    parent = "job" if model is PushDispatch else "broadcast"
    with transaction.atomic():
        rows = list(
            model.objects.filter(status=model.PENDING)
            .select_related(parent)
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("id")[:batch]
        )
        if not rows:
            return None
        agents = target_lookup.agents_by_id(row.agent_id for row in rows)
        # New users' conversations in one statement, not one get_or_create per enqueue (a
        # conversation already owned by another agent is left alone: that enqueue is
        # refused with the reason).
        Conversation.objects.bulk_create(
            [
                Conversation(conversation_id=row.conversation_id, agent_id=row.agent_id)
                for row in rows
                if row.agent_id in agents and row.conversation_id
            ],
            ignore_conflicts=True,
        )
        now = timezone.now()
        # One budget check per agent of the batch (none at all while no cap is set).
        pauses = {pk: budget.paused(agent, now) for pk, agent in agents.items()}
        for row in rows:
            agent = agents.get(row.agent_id)
            _enqueue_one(row, getattr(row, parent), agent, now, pauses.get(row.agent_id))
        model.objects.bulk_update(rows, ["status", "message_id", "error", "enqueued_at"])
    enqueued = sum(row.status == model.ENQUEUED for row in rows)
    return enqueued, len(rows) - enqueued


def _enqueue_one(row, parent, agent, now, pause: budget.Pause | None = None) -> None:
    if isinstance(parent, PushJob):
        metadata = {"push_job_id": str(parent.pk), "run_key": row.run_key, "push_mode": row.mode}
    else:
        metadata = {"push_broadcast_id": str(parent.pk), "push_mode": "broadcast"}
    if agent is None:
        row.status, row.error = row.FAILED, "The agent of this binding no longer exists."
        return
    if pause is not None:  # SPEC §24: recorded as skipped, reason budget
        row.status, row.error = row.SKIPPED, f"budget: {pause.detail}"
        return
    try:
        with transaction.atomic():  # a refusal or error here leaves the batch usable
            result = enqueue_message(
                conversation_id=row.conversation_id,
                agent_key=agent.agent_key,
                payload=target_lookup.payload_for(row, parent.text, metadata),
                agent=agent,
            )
    except EnqueueError as exc:
        row.status, row.error = row.FAILED, str(exc)
        return
    row.status, row.message_id, row.enqueued_at = row.ENQUEUED, result.message.pk, now


def run_scheduled() -> dict:
    """django-q2 schedule target (every minute)."""
    return dispatch_push_jobs()
