"""Claim, lease fencing and retries (SPEC §6.2–6.3); the sweeper is in ``workers.sweep``.

Invariants this module keeps, under any interleaving of workers:
- at most one ``processing`` message per conversation;
- a heartbeat, completion, failure or delivery only lands with the live lease that the
  claim handed out (a late call after expiry gets ``LeaseLost`` and changes nothing);
- a claim considers the whole queue in (priority desc, scheduled_for, id) order.

On PostgreSQL the candidate's conversation row is locked (``SKIP LOCKED``: another
claimer's conversation is passed over) before anything is written, so two claimers can never
both pick messages of one conversation; on SQLite the settings open every transaction IMMEDIATE,
which serialises claimers outright.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
from contextlib import nullcontext
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from agents.models import Conversation, RuntimeConfig
from workers import sql, sql_claim
from workers.dead_letters import dead_lettered
from workers.errors import LeaseLost  # defined with its 409 answer; leases.LeaseLost stays
from workers.job_events import announce_reply
from workers.lifecycle import is_stale, live_worker_cutoff, live_workers
from workers.models import JobUsage, Message, Worker
from workers.sweep import release_expired, sweep_expired_leases  # noqa: F401 (schedule path)
from workers.usage import record_usage

CLAIM_CANDIDATE_TRIES = 8
# A job heartbeat refreshes the worker's own liveness only when it is older than this (far
# below stale_after), saving a write on most heartbeats.
LIVENESS_REFRESH = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class ClaimedJob:
    message: Message
    lease_id: str
    lease_expires_at: dt.datetime

    @property
    def attempt(self) -> int:
        return self.message.attempts + 1


def retry_delay_seconds(attempts: int, config: RuntimeConfig, rng=random) -> float:
    """Exponential backoff with up to 10 % jitter: min(max, base · factor^(attempts-1))."""
    exponent = max(0, attempts - 1)
    delay = min(config.retry_max_seconds, config.retry_base_seconds * config.retry_factor**exponent)
    return delay + delay * 0.1 * rng.random()


def _other_live_workers(worker: Worker, now: dt.datetime, config: RuntimeConfig):
    return live_workers(now, config).exclude(pk=worker.pk)


def _in_handoff(worker: Worker, now: dt.datetime):
    """For a message queryset: its conversation waits for another worker's snapshot."""
    return Exists(
        Conversation.objects.filter(pk=OuterRef("conversation_id"), handoff_until__gt=now).exclude(
            handoff_from_worker=worker.worker_id
        )
    )


CLAIM_WORKER_FIELDS = (
    "load",
    "last_claim_at",
    "heartbeat_at",
    "scheduled_shutdown_at",
    "assigned_conversation_id",
    "assigned_agent_key",
    "assigned_lease_id",
    "assigned_at",
)


def claim_next_job(worker: Worker, *, conversation_id: str | None = None) -> ClaimedJob | None:
    """Lease the next ready message to ``worker``, or return None when there is none for it.

    A worker keeps to the conversation it is assigned to (its warm workspace); an unassigned
    worker takes the best candidate of the whole queue, or of ``conversation_id`` when given.
    """
    config = RuntimeConfig.get_cached()
    caller = worker
    with transaction.atomic():
        now = timezone.now()
        # Lock the worker row: two claims with one token never take two jobs, and the
        # status and assignment are read fresh. Its assigned conversation is locked with it
        # (waiting, not skipping, is right: that conversation is ours to serve).
        worker, assigned = sql_claim.locked_worker_and_conversation(worker.pk)
        # A stale worker is dead to everyone else: it gets nothing, and its poll does not
        # revive it (see control_state); its next control call tells it to stop.
        if worker.status != Worker.ACTIVE or is_stale(worker, now, config):
            return None
        if worker.assigned_conversation_id is not None:
            conversation = assigned
            if conversation_id is not None and conversation_id != conversation.conversation_id:
                return None
            job = _claim_in_conversation(worker, conversation, now, config, locked=True)
        elif conversation_id is not None:
            conversation = Conversation.objects.filter(conversation_id=conversation_id).first()
            job = (
                _claim_in_conversation(worker, conversation, now, config) if conversation else None
            )
        else:
            job = _claim_anywhere(worker, now, config)
        if job is None:  # a successful claim refreshed liveness already
            Worker.objects.filter(pk=worker.pk).update(heartbeat_at=now)
            return None
    # The caller's instance reflects the claim (assignment, load, liveness), so code that
    # keeps using it sees the worker as it now is.
    for field in CLAIM_WORKER_FIELDS:
        setattr(caller, field, getattr(worker, field))
    return job


def _claim_anywhere(worker: Worker, now: dt.datetime, config: RuntimeConfig) -> ClaimedJob | None:
    excluded: list[int] = []
    cutoff = live_worker_cutoff(now, config)
    for _ in range(CLAIM_CANDIDATE_TRIES):
        # The per-conversation marker narrows the whole queue to the few conversations that
        # can hold the best candidate (constant however many busy ones wait ahead); the full
        # rules then run over those only, so the answer is the whole-queue query's.
        free, doubtful = sql_claim.claimable_conversations(
            worker, now, cutoff, excluded, CLAIM_CANDIDATE_TRIES
        )
        if not free and not doubtful:
            return None
        candidate = candidates_among(worker, now, config, free + doubtful, excluded).first()
        if candidate is None:
            if len(free) < CLAIM_CANDIDATE_TRIES:
                return None
            # Every free conversation looked at is taken by concurrent claims right now:
            # look further down the queue, as the whole-queue query would.
            excluded.extend(free)
            continue
        job = _claim_in_conversation(worker, candidate.conversation, now, config, locked=True)
        if job is not None:
            return job
        excluded.append(candidate.conversation_id)
    return None


def candidates_among(
    worker: Worker, now: dt.datetime, config: RuntimeConfig, conversations, excluded
):
    """The claim's full candidate query (SPEC §6.2) over ``conversations``, locking the
    candidate's conversation (skipping those other claimers hold), never the message: a
    message lock would outlive a failed attempt, and two claimers each holding the head of
    the conversation the other claims in would deadlock (tests/workers/test_queue_marker.py)."""
    return (
        Message.objects.claim_candidates(now, _other_live_workers(worker, now, config))
        .filter(conversation_id__in=conversations)
        .exclude(conversation_id__in=excluded)
        .exclude(_in_handoff(worker, now))
        .select_related("conversation")
        .select_for_update(skip_locked=True, no_key=True, of=("conversation",))
        .only(
            "id",
            "conversation_id",
            *(f"conversation__{name}" for name in sql_claim.CLAIM_CONVERSATION_FIELDS),
        )
    )


def _claim_in_conversation(
    worker: Worker,
    conversation: Conversation,
    now: dt.datetime,
    config: RuntimeConfig,
    *,
    locked: bool = False,
) -> ClaimedJob | None:
    if not locked:
        # Waiting here (not skipping) is right: the conversation is this worker's to serve.
        conversation = sql.locked(Conversation, conversation.pk)
    # Handoff (§6.2): the worker that released this conversation is still writing its
    # snapshot; claiming now would restore an older one. Read off the row just locked, so
    # every claim path checks it at no extra query, the same way on every database.
    if conversation.in_handoff_for(worker.worker_id, now):
        return None
    lease_id = secrets.token_hex(16)
    lease_expires_at = now + dt.timedelta(seconds=config.lease_seconds)
    fields = {
        "status": Message.PROCESSING,
        "claimed_by": worker.worker_id,
        "lease_id": lease_id,
        "lease_expires_at": lease_expires_at,
        "claimed_at": now,
        "next_retry_at": None,
    }
    worker_fields = {
        "load": 1,
        "last_claim_at": now,
        "heartbeat_at": now,
        "scheduled_shutdown_at": None,
        "assigned_conversation_id": conversation.pk,
        "assigned_lease_id": lease_id,
        "assigned_at": worker.assigned_at if worker.assigned_conversation_id else now,
    }
    # The hot path, one statement: the next ready message, with whether the conversation
    # has a processing message or another live owner, taken at once when it has neither.
    # This is sound because the conversation row was locked by an earlier statement: every
    # claim locks it before it makes a message processing, so this statement's snapshot
    # already sees all such claims. A stale "busy" (a job completed meanwhile) only sends
    # us down the careful path below.
    message = sql_claim.claim_next_ready(
        worker.pk, conversation.pk, now, live_worker_cutoff(now, config), fields, worker_fields
    )
    if message is not None and message.owned_by_other:
        return None
    if message is None or not message.taken:
        message = _claim_candidate_past_processing(worker, conversation, now, config)
        if message is None:
            return None
        sql.update(Message, fields, ("pk", "=", message.pk))
        sql.update(
            Worker,
            {**worker_fields, "assigned_agent_key": message.agent_key},
            ("pk", "=", worker.pk),
        )
    for name, value in fields.items():
        setattr(message, name, value)
    message.conversation = conversation
    worker_fields["assigned_agent_key"] = message.agent_key
    for name, value in worker_fields.items():
        setattr(worker, name, value)
    return ClaimedJob(message=message, lease_id=lease_id, lease_expires_at=lease_expires_at)


def _claim_candidate_past_processing(
    worker: Worker, conversation: Conversation, now: dt.datetime, config: RuntimeConfig
) -> Message | None:
    """The careful path: a processing message exists (or nothing is ready).

    A live lease means the conversation is busy. An expired lease that the sweeper has not
    reached yet is requeued first, in this same transaction, so the conversation never has
    two processing messages; then the next ready message (maybe that one) is taken.
    """
    if _other_live_workers(worker, now, config).filter(assigned_conversation=conversation).exists():
        return None
    processing = list(
        Message.objects.select_for_update().filter(
            conversation=conversation, status=Message.PROCESSING
        )
    )
    if any(m.has_live_lease(now) for m in processing):
        return None
    for stale in processing:
        release_expired(stale, now)
    return (
        Message.objects.ready(now)
        .filter(conversation=conversation)
        .in_claim_order()
        .select_for_update()
        .first()
    )


def _lease_conditions(worker: Worker, message_id: int, lease_id: str, now: dt.datetime):
    """``(field, operator, value)`` conditions that hold only while ``worker`` holds the live
    lease ``lease_id`` on the message: the one definition of the fence."""
    if not lease_id or not isinstance(lease_id, str):
        raise LeaseLost()
    return (
        ("pk", "=", message_id),
        ("status", "=", Message.PROCESSING),
        ("claimed_by", "=", worker.worker_id),
        ("lease_id", "=", lease_id),
        ("lease_expires_at", ">", now),
    )


_LOOKUP_BY_OPERATOR = {"=": "exact", ">": "gt"}


def fenced(worker: Worker, message_id: int, lease_id: str, now: dt.datetime):
    """The queryset that matches only while ``worker`` holds the live lease ``lease_id``.

    Every lease-guarded write filters through it (or ``_fenced_update``), so the check and
    the write are one statement (or one locked read) and a lease cannot expire in between.
    """
    conditions = _lease_conditions(worker, message_id, lease_id, now)
    return Message.objects.filter(
        **{f"{name}__{_LOOKUP_BY_OPERATOR[op]}": value for name, op, value in conditions}
    )


def _fenced_update(worker: Worker, message_id: int, lease_id: str, now, values: dict) -> int:
    """The write of ``fenced`` in one statement: it lands only while the lease is live."""
    return sql.update(Message, values, *_lease_conditions(worker, message_id, lease_id, now))


def get_leased_message(worker: Worker, message_id: int, lease_id: str) -> Message:
    message = fenced(worker, message_id, lease_id, timezone.now()).first()
    if message is None:
        raise LeaseLost()
    return message


def heartbeat_job(worker: Worker, message_id: int, lease_id: str) -> dt.datetime:
    config = RuntimeConfig.get_cached()
    now = timezone.now()
    expires = now + dt.timedelta(seconds=config.lease_seconds)
    # One conditional UPDATE: it lands only while the lease is held and alive.
    if _fenced_update(worker, message_id, lease_id, now, {"lease_expires_at": expires}) != 1:
        raise LeaseLost()
    refresh = min(LIVENESS_REFRESH, dt.timedelta(seconds=config.stale_after_seconds / 4))
    if worker.heartbeat_at is None or now - worker.heartbeat_at > refresh:
        sql.update(Worker, {"heartbeat_at": now}, ("pk", "=", worker.pk))
    return expires


def complete_job(worker: Worker, message_id: int, lease_id: str, usage: dict | None = None) -> None:
    config = RuntimeConfig.get_cached()
    now = timezone.now()
    done = {"status": Message.DONE, "completed_at": now, "lease_expires_at": None}
    fence = _lease_conditions(worker, message_id, lease_id, now)
    idle = _idle_fields(now, config)
    # Usage rows ride in the finish's transaction; without usage the finish is one statement.
    with transaction.atomic() if usage else nullcontext():
        if not sql.finish_job(fence, {**done, "last_error": ""}, worker.pk, idle):
            raise LeaseLost()
        record_usage(message_id, usage, JobUsage.DONE, now)
    for name, value in idle.items():
        setattr(worker, name, value)


def fail_job(
    worker: Worker, message_id: int, lease_id: str, error: str, usage: dict | None = None
) -> Message:
    config = RuntimeConfig.get_cached()
    with transaction.atomic():
        now = timezone.now()
        message = fenced(worker, message_id, lease_id, now).select_for_update().first()
        if message is None:
            raise LeaseLost()
        attempts = message.attempts + 1
        fields = {
            "attempts": attempts,
            "last_error": (error or "")[:10_000],
            "lease_expires_at": None,
        }
        if attempts >= message.max_attempts:
            fields.update(status=Message.DEAD_LETTER, dead_lettered_at=now, next_retry_at=None)
        else:
            retry_at = now + dt.timedelta(seconds=retry_delay_seconds(attempts, config))
            fields.update(status=Message.QUEUED, scheduled_for=retry_at, next_retry_at=retry_at)
        Message.objects.filter(pk=message.pk).update(**fields)
        record_usage(message_id, usage, JobUsage.FAILED, now)
        if fields["status"] == Message.DEAD_LETTER:
            dead_lettered([message_id], now)
        _after_job(worker, now, config)
        return Message.objects.get(pk=message_id)


def mark_delivered(worker: Worker, message_id: int, lease_id: str) -> dt.datetime:
    """Record that the reply reached the user; idempotent, keeps the first time."""
    with transaction.atomic():
        now = timezone.now()
        message = (
            fenced(worker, message_id, lease_id, now)
            .select_for_update(of=("self",))
            .select_related("conversation")
            .first()
        )
        if message is None:
            raise LeaseLost()
        if message.delivered_at is None:
            Message.objects.filter(pk=message.pk).update(delivered_at=now)
            # An agent whose worker sends its own replies (delivery: worker) says so here.
            announce_reply(message)
            return now
        return message.delivered_at


def _idle_fields(now: dt.datetime, config: RuntimeConfig) -> dict:
    # The worker keeps its conversation (warm workspace) and goes idle until the deadline.
    return {
        "load": 0,
        "heartbeat_at": now,
        "idle_since": now,
        "assigned_lease_id": "",
        "scheduled_shutdown_at": now + dt.timedelta(seconds=config.idle_timeout_seconds),
    }


def _after_job(worker: Worker, now: dt.datetime, config: RuntimeConfig) -> None:
    fields = _idle_fields(now, config)
    sql.update(Worker, fields, ("pk", "=", worker.pk))
    for name, value in fields.items():
        setattr(worker, name, value)
