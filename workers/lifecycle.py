"""Worker lifecycle: active → draining → stopping → stopped, enforced here and only here."""

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
    Message.objects.filter(
        status=Message.PROCESSING, claimed_by__in=worker_ids, lease_expires_at__gt=now
    ).update(lease_expires_at=now)


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
