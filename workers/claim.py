"""The claim (SPEC §6.2): which message a worker gets, and the lease it gets it under. The
fenced calls that follow a claim (heartbeat, complete, fail, delivered) are in
``workers.leases``; the sweeper is in ``workers.sweep``.

Invariants this module keeps, under any interleaving of workers:
- at most one ``processing`` message per conversation;
- a claim considers the whole queue in (priority desc, scheduled_for, id) order.

On PostgreSQL the candidate's conversation row is locked (``SKIP LOCKED``: another
claimer's conversation is passed over) before anything is written, so two claimers can never
both pick messages of one conversation; on SQLite the settings open every transaction IMMEDIATE,
which serialises claimers outright.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from agents.models import Conversation, RuntimeConfig
from workers import sql, sql_claim, sql_warm_claim
from workers.lifecycle import is_stale, live_worker_cutoff, live_workers
from workers.models import Message, Worker
from workers.sql import TOKEN_OWNER_CONVERSATION, TOKEN_OWNER_ID, OwnerColumn
from workers.sql_cursor import can_pipeline
from workers.sweep import release_expired
from workers.tokens import Landed

CLAIM_CANDIDATE_TRIES = 8


@dataclass(frozen=True)
class ClaimedJob:
    message: Message
    lease_id: str
    lease_expires_at: dt.datetime

    @property
    def attempt(self) -> int:
        return self.message.attempts + 1


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
    # The usual claim, a warm worker's, in one round trip where the database allows it.
    if worker.assigned_conversation_id is not None and can_pipeline():
        decided = _claim_warm(worker, conversation_id, config)
        if decided is not None:
            job, worker = decided
            if job is not None:
                for field in CLAIM_WORKER_FIELDS:
                    setattr(caller, field, getattr(worker, field))
            return job
    return _claim_in_transaction(caller, conversation_id, config)


def _claim_in_transaction(
    caller: Worker, conversation_id: str | None, config: RuntimeConfig
) -> ClaimedJob | None:
    """The full claim, whatever the case: one transaction, the rules checked in Python."""
    with transaction.atomic():
        now = timezone.now()
        # Lock the worker row: two claims with one token never take two jobs, and the
        # status and assignment are read fresh. Its assigned conversation is locked with it
        # (waiting, not skipping, is right: that conversation is ours to serve).
        worker, assigned = sql_claim.locked_worker_and_conversation(caller.pk)
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


def _claim_warm(
    worker: Worker, conversation_id: str | None, config: RuntimeConfig
) -> tuple[ClaimedJob | None, Worker] | None:
    """The usual claim in one round trip (``sql_warm_claim.claim_assigned``): a worker assigned to
    a conversation takes its next message, or learns there is nothing to take. Returns
    ``(job or None, the worker as locked)`` when that round trip is the answer; None when
    it decided nothing (a rule said no, the conversation is busy, the worker moved
    meanwhile): the full claim then runs and answers, since it may still find a job past an
    expired lease."""
    now = timezone.now()
    lease = _Lease(worker.worker_id, worker.assigned_conversation_id, now, config, assigning=False)
    cutoff = live_worker_cutoff(now, config)
    found = sql_warm_claim.claim_assigned(
        worker, conversation_id, now, cutoff, lease.fields, lease.worker_fields
    )
    return _warm_answer(found, lease)


def _warm_answer(found: sql_warm_claim.WarmClaim, lease: _Lease):
    if found.idle:
        return None, found.worker
    if found.message is None or not found.message.taken:
        return None
    conversation = sql_claim.locked_conversation(found.worker)
    return lease.hand_out(found.worker, conversation, found.message), found.worker


def claim_by_token(token, *, conversation_id: str | None = None) -> Landed | None:
    """``claim_next_job`` for the worker owning ``token`` (a ``workers.tokens.WorkerToken``)
    when it is the usual claim, a warm worker's, in one round trip with its
    authentication (``sql_warm_claim.claim_assigned_by_token``); when that round trip finds the
    token's owner but decides nothing (it is not assigned, a rule said no, the conversation
    is busy), the full claim for that owner follows, as in ``claim_next_job``. None when
    the token has no owner (or this cannot run here), having taken nothing: the caller
    then authenticates, which answers 401."""
    if not can_pipeline():
        return None
    config = RuntimeConfig.get_cached()
    now = timezone.now()
    # Who claims is known only inside the statements: the lease names it as ``me``'s.
    lease = _Lease(TOKEN_OWNER_ID, TOKEN_OWNER_CONVERSATION, now, config, assigning=False)
    cutoff = live_worker_cutoff(now, config)
    found = sql_warm_claim.claim_assigned_by_token(
        token, conversation_id, now, cutoff, lease.fields, lease.worker_fields
    )
    if found is None:
        return None
    decided = _warm_answer(found, lease)
    if decided is None:
        # The round trip found the token's owner but decided nothing: the full claim for
        # it, as claim_next_job runs after its own one-round-trip attempt.
        job = _claim_in_transaction(found.worker, conversation_id, config)
        return Landed(found.worker.worker_id, job)
    job, worker = decided
    return Landed(worker.worker_id, job)


class _Lease:
    """What a claim writes: the message's lease and the worker's assignment to it."""

    def __init__(self, worker_id, conversation_pk, now, config: RuntimeConfig, *, assigning):
        """``worker_id`` and ``conversation_pk`` may be ``OwnerColumn`` (a claim by token);
        ``assigning``: the worker is not assigned yet (its assignment starts now)."""
        self.lease_id = secrets.token_hex(16)
        self.expires_at = now + dt.timedelta(seconds=config.lease_seconds)
        self.fields = {
            "status": Message.PROCESSING,
            "claimed_by": worker_id,
            "lease_id": self.lease_id,
            "lease_expires_at": self.expires_at,
            "claimed_at": now,
            "next_retry_at": None,
        }
        self.worker_fields = {
            "load": 1,
            "last_claim_at": now,
            "heartbeat_at": now,
            "scheduled_shutdown_at": None,
            "assigned_conversation_id": conversation_pk,
            "assigned_lease_id": self.lease_id,
        }
        if assigning:  # an assigned worker keeps its time
            self.worker_fields["assigned_at"] = now

    def hand_out(self, worker: Worker, conversation: Conversation, message: Message) -> ClaimedJob:
        """The job, with the instances set to what was written."""
        for name, value in self.fields.items():
            setattr(message, name, value.of(worker) if isinstance(value, OwnerColumn) else value)
        message.conversation = conversation
        for name, value in {**self.worker_fields, "assigned_agent_key": message.agent_key}.items():
            if not isinstance(value, OwnerColumn):  # the locked row has it already
                setattr(worker, name, value)
        return ClaimedJob(message=message, lease_id=self.lease_id, lease_expires_at=self.expires_at)


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
    assigning = worker.assigned_conversation_id is None
    lease = _Lease(worker.worker_id, conversation.pk, now, config, assigning=assigning)
    # The hot path, one statement: the next ready message, with whether the conversation
    # has a processing message or another live owner, taken at once when it has neither.
    # This is sound because the conversation row was locked by an earlier statement: every
    # claim locks it before it makes a message processing, so this statement's snapshot
    # already sees all such claims. A stale "busy" (a job completed meanwhile) only sends
    # us down the careful path below.
    message = sql_claim.claim_next_ready(
        worker.pk,
        conversation.pk,
        now,
        live_worker_cutoff(now, config),
        lease.fields,
        lease.worker_fields,
    )
    if message is not None and message.owned_by_other:
        return None
    if message is None or not message.taken:
        message = _claim_candidate_past_processing(worker, conversation, now, config)
        if message is None:
            return None
        sql.update(Message, lease.fields, ("pk", "=", message.pk))
        sql.update(
            Worker,
            {**lease.worker_fields, "assigned_agent_key": message.agent_key},
            ("pk", "=", worker.pk),
        )
    return lease.hand_out(worker, conversation, message)


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
