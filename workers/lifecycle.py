"""Worker lifecycle: active → draining → stopping → stopped, enforced here and only here;
and liveness: when a worker counts as live, and what its ``control`` poll answers."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from agents.models import Conversation, RuntimeConfig
from workers.models import Message, Worker

# Forward only. Skipping ahead is allowed on purpose: a failed spawn (active → stopped, or
# → stopping when something may be left to remove) and the Fly cleanup (whose machines are
# already destroyed) have nothing to drain or snapshot.
NEXT_STATUSES = {
    Worker.ACTIVE: {Worker.DRAINING, Worker.STOPPING, Worker.STOPPED},
    Worker.DRAINING: {Worker.STOPPING, Worker.STOPPED},
    Worker.STOPPING: {Worker.STOPPED},
    Worker.STOPPED: set(),
}


class InvalidTransition(Exception):
    pass


def transition_worker(
    worker: Worker,
    to_status: str,
    *,
    reason: str,
    now: dt.datetime | None = None,
    alive: bool = True,
) -> Worker:
    """Move ``worker`` forward in its lifecycle (never back); a no-op if already there.

    The update is conditional on the status read, so two reconciles racing on one worker
    cannot both apply a transition. Draining a worker that is ``alive`` (not gone, not
    stale) hands its conversation off: nobody else claims there until its final snapshot is
    stored (SPEC §6.2). Once it stops, nothing more comes from it: its handoffs end.
    """
    now = now or timezone.now()
    if to_status == worker.status:
        return worker
    if to_status not in NEXT_STATUSES.get(worker.status, set()):
        raise InvalidTransition(
            f"Worker '{worker.worker_id}' cannot transition "
            f"from '{worker.status}' to '{to_status}'."
        )
    fields: dict = {"status": to_status, "status_reason": reason[:200], "updated_at": now}
    if to_status == Worker.DRAINING:
        fields["draining_since"] = now
    if to_status == Worker.STOPPED:
        fields.update(
            stopped_at=now,
            load=0,
            assigned_conversation=None,
            assigned_agent_key="",
            assigned_lease_id="",
            token_hash="",
            token_revoked_at=now,
        )
    with transaction.atomic():
        updated = Worker.objects.filter(pk=worker.pk, status=worker.status).update(**fields)
        if updated != 1:
            worker.refresh_from_db()
            if worker.status == to_status:
                return worker
            raise InvalidTransition(
                f"Worker '{worker.worker_id}' changed status concurrently (now '{worker.status}')."
            )
        if to_status == Worker.DRAINING and alive and worked_in_assignment(worker):
            begin_handoff(worker.assigned_conversation_id, worker.worker_id, now)
        elif to_status in (Worker.STOPPING, Worker.STOPPED):
            end_handoff(worker.worker_id)
    worker.refresh_from_db()
    return worker


def worked_in_assignment(worker: Worker) -> bool:
    """It claimed a job in the conversation it is assigned to now, so its workspace holds
    state of that conversation that only its next snapshot will carry."""
    return bool(
        worker.assigned_conversation_id
        and worker.last_claim_at
        and worker.assigned_at
        and worker.last_claim_at >= worker.assigned_at
    )


def begin_handoff(
    conversation_pk: int, worker_id: str, now: dt.datetime, config: RuntimeConfig | None = None
) -> None:
    """``worker_id`` released the conversation and is writing its snapshot of it: nobody
    else claims there until that snapshot is finalized or failed, or the timeout passes."""
    timeout = (config or RuntimeConfig.get_cached()).handoff_timeout_seconds
    Conversation.objects.filter(pk=conversation_pk).update(
        handoff_from_worker=worker_id, handoff_until=now + dt.timedelta(seconds=timeout)
    )


def end_handoff(worker_id: str, conversation_id: str | None = None) -> int:
    """The worker's snapshot of the conversation (of all of them, when None) is in, or will
    never come: the conversation is claimable again."""
    pending = Conversation.objects.filter(handoff_from_worker=worker_id)
    if conversation_id is not None:
        pending = pending.filter(conversation_id=conversation_id)
    return pending.update(handoff_from_worker="", handoff_until=None)


def end_leases_held_by(worker_ids, now: dt.datetime) -> None:
    """The workers' process or machine is gone: their leases are held for nobody. End them
    now, so the next sweep requeues the jobs (an attempt counted) without waiting for the
    leases to run out."""
    Message.objects.with_live_lease(now).filter(claimed_by__in=worker_ids).update(
        lease_expires_at=now
    )


def live_worker_cutoff(now: dt.datetime, config: RuntimeConfig) -> dt.datetime:
    """Heard from since this instant: live (``Worker.objects.live(cutoff)``)."""
    return now - dt.timedelta(seconds=config.stale_after_seconds)


def live_workers(now: dt.datetime, config: RuntimeConfig):
    return Worker.objects.live(live_worker_cutoff(now, config))


def is_stale(worker: Worker, now: dt.datetime, config: RuntimeConfig) -> bool:
    """Liveness older than ``stale_after``: the rest of the system already treats the worker
    as dead (another worker may have taken over its conversation), so it must not come back.

    A worker never seen yet (registered by hand, no call so far) counts from its creation.
    """
    seen = worker.heartbeat_at or worker.created_at
    return seen < live_worker_cutoff(now, config)


def control_state(worker: Worker) -> dict:
    """What ``POST control`` answers, and the liveness refresh it implies (SPEC §7, §10).

    Stop when the worker is not active, is past its idle deadline, or went stale. A stale
    worker's liveness is *not* refreshed: reviving it would make two live workers claim one
    conversation (the one that took over and this one), and each would block the other.
    """
    config = RuntimeConfig.get_cached()
    now = timezone.now()
    worker = Worker.objects.select_related("assigned_conversation").get(pk=worker.pk)
    stop, reason = should_stop(worker, now)
    stale = is_stale(worker, now, config)
    if stale and not stop:
        stop, reason = True, "heartbeat stale"
    if not stale:
        Worker.objects.filter(pk=worker.pk).update(heartbeat_at=now)
    # The conversation it serves now: fair share may have given it another one (§6.2), and
    # the worker follows (snapshots the old workspace, claims in the new conversation).
    conversation = worker.assigned_conversation
    return {
        "should_stop": stop,
        "reason": reason,
        "status": worker.status,
        "conversation_id": conversation.conversation_id if conversation else None,
    }


def should_stop(worker: Worker, now: dt.datetime | None = None) -> tuple[bool, str | None]:
    """What ``control`` answers: stop when not active or past the idle deadline."""
    now = now or timezone.now()
    if worker.status != Worker.ACTIVE:
        return True, worker.status_reason or f"worker is {worker.status}"
    if worker.scheduled_shutdown_at is not None and worker.scheduled_shutdown_at <= now:
        return True, "idle timeout"
    return False, None


def on_final_snapshot(worker: Worker, snapshot) -> None:
    """A snapshot is stored: its conversation's handoff (if any) ends, and a draining
    worker may now be torn down."""
    with transaction.atomic():  # the snapshot link and the transition land together
        # Worker row first, then the conversation: the lock order of claims and reconcile.
        Worker.objects.filter(pk=worker.pk).update(last_snapshot=snapshot)
        end_handoff(snapshot.worker_id, snapshot.conversation_id)
        worker.refresh_from_db()
        if worker.status == Worker.DRAINING:
            transition_worker(worker, Worker.STOPPING, reason="final snapshot stored")
