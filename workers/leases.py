"""Claim, lease fencing, retries and the lease sweeper (SPEC §6.2–6.3).

Invariants this module keeps, under any interleaving of workers:
- at most one ``processing`` message per conversation;
- a heartbeat, completion, failure or delivery only lands with the live lease that the
  claim handed out (a late call after expiry gets ``LeaseLost`` and changes nothing);
- a claim considers the whole queue in (priority desc, scheduled_for, id) order.

On PostgreSQL the candidate row is taken with ``FOR UPDATE SKIP LOCKED`` and the
conversation row is locked before anything is written, so two claimers can never both pick
messages of one conversation; on SQLite the settings open every transaction IMMEDIATE,
which serialises claimers outright.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from agents.models import Conversation, RuntimeConfig
from workers.dead_letters import apologize_after_commit
from workers.errors import LeaseLost  # defined with its 409 answer; leases.LeaseLost stays
from workers.models import JobUsage, Message, Worker
from workers.usage import record_usage

LEASE_EXPIRED_ERROR = "lease expired"
SWEEP_BATCH = 500
CLAIM_CANDIDATE_TRIES = 8
# A job heartbeat refreshes the worker's own liveness only when it is older than this (far
# below stale_after), saving a write on most heartbeats.
LIVENESS_REFRESH = dt.timedelta(seconds=30)


def _update(model, values: dict, *where: tuple[str, str, object]) -> int:
    """``model.objects.filter(...).update(**values)`` for the queue's hot paths.

    Claim, heartbeat and complete run a handful of fixed-shape UPDATEs per request, and the
    ORM spends longer compiling each one than the database spends running it
    (bench/claim_throughput.py). Values and conditions are prepared by the model's own
    fields, so both backends see exactly what the ORM would send. ``where`` holds
    ``(field, operator, value)`` triples, operator ``=`` or ``>``.
    """
    quote = connection.ops.quote_name
    meta = model._meta
    assignments, conditions, params = [], [], []
    for name, value in values.items():
        field = meta.get_field(name)
        assignments.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    for name, operator, value in where:
        field = meta.pk if name == "pk" else meta.get_field(name)
        assert operator in ("=", ">") and value is not None
        conditions.append(f"{quote(field.column)} {operator} %s")
        params.append(field.get_db_prep_value(value, connection))
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)} "  # noqa: S608
        f"WHERE {' AND '.join(conditions)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _locked(model, pk: int):
    """``model.objects.select_for_update().get(pk=pk)``, read with SQL for the claim's hot
    path (see ``_update``). SQLite has no row locks: its claims are serialised by IMMEDIATE
    transactions instead."""
    quote = connection.ops.quote_name
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    sql = f"SELECT * FROM {quote(model._meta.db_table)} WHERE id = %s{lock}"  # noqa: S608
    found = next(iter(model.objects.raw(sql, [pk])), None)
    if found is None:
        raise model.DoesNotExist(f"No {model.__name__} with id {pk}.")
    return found


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


def live_worker_cutoff(now: dt.datetime, config: RuntimeConfig) -> dt.datetime:
    return now - dt.timedelta(seconds=config.stale_after_seconds)


def live_workers(now: dt.datetime, config: RuntimeConfig):
    """Workers that may claim and were heard from within ``stale_after``: the one
    definition of a live worker for every query (claims, sweeps, reconcile, fair share)."""
    return Worker.objects.filter(
        status=Worker.ACTIVE, heartbeat_at__gte=live_worker_cutoff(now, config)
    )


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
    from workers.lifecycle import should_stop

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


def _other_live_workers(worker: Worker, now: dt.datetime, config: RuntimeConfig):
    return live_workers(now, config).exclude(pk=worker.pk)


def _owned_by_other_live_worker(worker: Worker, now: dt.datetime, config: RuntimeConfig):
    """For a message queryset: its conversation is assigned to another live worker."""
    return Exists(
        _other_live_workers(worker, now, config).filter(
            assigned_conversation=OuterRef("conversation_id")
        )
    )


def _has_live_lease(now: dt.datetime):
    return Exists(
        Message.objects.filter(
            conversation_id=OuterRef("conversation_id"),
            status=Message.PROCESSING,
            lease_expires_at__gt=now,
        )
    )


def _in_handoff(worker: Worker, now: dt.datetime):
    """For a message queryset: its conversation waits for another worker's snapshot."""
    return Exists(
        Conversation.objects.filter(pk=OuterRef("conversation_id"), handoff_until__gt=now).exclude(
            handoff_from_worker=worker.worker_id
        )
    )


def _ready(now: dt.datetime):
    return Message.objects.filter(status=Message.QUEUED, scheduled_for__lte=now)


CLAIM_ORDER = ("-priority", "scheduled_for", "id")
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
        # status and assignment are read fresh.
        worker = _locked(Worker, worker.pk)
        # A stale worker is dead to everyone else: it gets nothing, and its poll does not
        # revive it (see control_state); its next control call tells it to stop.
        if worker.status != Worker.ACTIVE or is_stale(worker, now, config):
            return None
        if worker.assigned_conversation_id is not None:
            # Waiting for the lock (not skipping) is right: this conversation is ours to serve.
            conversation = _locked(Conversation, worker.assigned_conversation_id)
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
    for _ in range(CLAIM_CANDIDATE_TRIES):
        candidate = (
            _ready(now)
            .exclude(conversation_id__in=excluded)
            .exclude(_has_live_lease(now))
            .exclude(_owned_by_other_live_worker(worker, now, config))
            .exclude(_in_handoff(worker, now))
            .order_by(*CLAIM_ORDER)
            .select_for_update(skip_locked=True, of=("self",))
            .only("id", "conversation_id")
            .first()
        )
        if candidate is None:
            return None
        conversation = (
            Conversation.objects.select_for_update(skip_locked=True)
            .filter(pk=candidate.conversation_id)
            .first()
        )
        if conversation is None:  # another claimer is working in it right now
            excluded.append(candidate.conversation_id)
            continue
        job = _claim_in_conversation(worker, conversation, now, config, locked=True)
        if job is not None:
            return job
        excluded.append(candidate.conversation_id)
    return None


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
        conversation = _locked(Conversation, conversation.pk)
    # Handoff (§6.2): the worker that released this conversation is still writing its
    # snapshot; claiming now would restore an older one. Read off the row just locked, so
    # every claim path checks it at no extra query, the same way on every database.
    if conversation.in_handoff_for(worker.worker_id, now):
        return None
    # The hot path, one query: the next ready message, with whether the conversation has a
    # processing message or another live owner. This is sound because the conversation row
    # was locked by an earlier statement: every claim locks it before it makes a message
    # processing, so this statement's snapshot already sees all such claims. A stale "busy"
    # (a job completed meanwhile) only sends us down the careful path below.
    message = _next_ready_with_flags(worker, conversation, now, config)
    if message is not None and message.owned_by_other:
        return None
    if message is None or message.busy:
        message = _claim_candidate_past_processing(worker, conversation, now, config)
        if message is None:
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
    _update(Message, fields, ("pk", "=", message.pk))
    for name, value in fields.items():
        setattr(message, name, value)
    message.conversation = conversation
    worker_fields = {
        "load": 1,
        "last_claim_at": now,
        "heartbeat_at": now,
        "scheduled_shutdown_at": None,
        "assigned_conversation_id": conversation.pk,
        "assigned_agent_key": message.agent_key,
        "assigned_lease_id": lease_id,
        "assigned_at": worker.assigned_at if worker.assigned_conversation_id else now,
    }
    _update(Worker, worker_fields, ("pk", "=", worker.pk))
    for name, value in worker_fields.items():
        setattr(worker, name, value)
    return ClaimedJob(message=message, lease_id=lease_id, lease_expires_at=lease_expires_at)


def _next_ready_with_flags(
    worker: Worker, conversation: Conversation, now: dt.datetime, config: RuntimeConfig
) -> Message | None:
    """The next ready message of ``conversation``, locked, annotated ``busy`` (some message
    of the conversation is processing) and ``owned_by_other`` (another live worker is
    assigned to it).

    This is the one query of a warm worker's claim, so it is written as SQL: built with the
    ORM, its two EXISTS clauses cost more to compile than the whole statement costs to run
    (bench/claim_throughput.py). Status values are literals so PostgreSQL can match the
    partial index ``msg_conversation_ready_idx``; the rest are parameters.
    """
    sql, params = next_ready_query(worker.pk, conversation.pk, now, config)
    return next(iter(Message.objects.raw(sql, params)), None)


def next_ready_query(
    worker_pk: int, conversation_pk: int, now: dt.datetime, config: RuntimeConfig
) -> tuple[str, list]:
    """The SQL and parameters of ``_next_ready_with_flags`` (the benchmark EXPLAINs it)."""
    quote = connection.ops.quote_name
    message_table = quote(Message._meta.db_table)
    worker_table = quote(Worker._meta.db_table)
    datetime_param = Message._meta.get_field("scheduled_for").get_db_prep_value
    lock = " FOR UPDATE OF m" if connection.features.has_select_for_update_of else ""
    sql = (
        "SELECT m.*, "  # noqa: S608 (table names and constants, never input)
        f"EXISTS (SELECT 1 FROM {message_table} p WHERE p.conversation_id = %s "
        f"AND p.status = '{Message.PROCESSING}') AS busy, "
        f"EXISTS (SELECT 1 FROM {worker_table} w WHERE w.assigned_conversation_id = %s "
        f"AND w.status = '{Worker.ACTIVE}' AND w.heartbeat_at >= %s AND w.id <> %s) "
        "AS owned_by_other "
        f"FROM {message_table} m WHERE m.conversation_id = %s "
        f"AND m.status = '{Message.QUEUED}' AND m.scheduled_for <= %s "
        f"ORDER BY m.priority DESC, m.scheduled_for ASC, m.id ASC LIMIT 1{lock}"
    )
    params = [
        conversation_pk,
        conversation_pk,
        datetime_param(live_worker_cutoff(now, config), connection),
        worker_pk,
        conversation_pk,
        datetime_param(now, connection),
    ]
    return sql, params


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
    if any(m.lease_expires_at and m.lease_expires_at > now for m in processing):
        return None
    for stale in processing:
        _release_expired(stale, now)
    return (
        _ready(now)
        .filter(conversation=conversation)
        .order_by(*CLAIM_ORDER)
        .select_for_update()
        .first()
    )


def _release_expired(message: Message, now: dt.datetime) -> str:
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
        apologize_after_commit([message.pk], now)
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
        expired_rows = Message.objects.filter(status=Message.PROCESSING).filter(
            Q(lease_expires_at__lte=now)
            | Q(lease_expires_at__isnull=True)
            | Q(lease_id="")
            | Q(claimed_by="")
        )
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
            if _release_expired(message, now) == Message.DEAD_LETTER:
                dead_lettered += 1
            else:
                requeued += 1
        if worker_ids:
            Worker.objects.filter(worker_id__in=worker_ids).update(
                load=0, assigned_lease_id="", idle_since=now
            )
            # Left with no job, the worker starts its idle clock like after a completion, so
            # a live worker whose job expired is still drained once it stays idle.
            Worker.objects.filter(
                worker_id__in=worker_ids, scheduled_shutdown_at__isnull=True
            ).update(scheduled_shutdown_at=now + dt.timedelta(seconds=config.idle_timeout_seconds))
            Worker.objects.filter(worker_id__in=worker_ids).exclude(
                status=Worker.ACTIVE, heartbeat_at__gte=live_worker_cutoff(now, config)
            ).update(assigned_conversation=None, assigned_agent_key="", assigned_at=None)
    return {"requeued": requeued, "dead_lettered": dead_lettered}


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
    return _update(Message, values, *_lease_conditions(worker, message_id, lease_id, now))


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
        _update(Worker, {"heartbeat_at": now}, ("pk", "=", worker.pk))
    return expires


def complete_job(worker: Worker, message_id: int, lease_id: str, usage: dict | None = None) -> None:
    config = RuntimeConfig.get_cached()
    with transaction.atomic():
        now = timezone.now()
        done = {"status": Message.DONE, "completed_at": now, "lease_expires_at": None}
        updated = _fenced_update(worker, message_id, lease_id, now, {**done, "last_error": ""})
        if updated != 1:
            raise LeaseLost()
        record_usage(message_id, usage, JobUsage.DONE, now)
        _after_job(worker, now, config)


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
            apologize_after_commit([message_id], now)
        _after_job(worker, now, config)
        return Message.objects.get(pk=message_id)


def mark_delivered(worker: Worker, message_id: int, lease_id: str) -> dt.datetime:
    """Record that the reply reached the user; idempotent, keeps the first time."""
    with transaction.atomic():
        now = timezone.now()
        message = fenced(worker, message_id, lease_id, now).select_for_update().first()
        if message is None:
            raise LeaseLost()
        if message.delivered_at is None:
            Message.objects.filter(pk=message.pk).update(delivered_at=now)
            return now
        return message.delivered_at


def _after_job(worker: Worker, now: dt.datetime, config: RuntimeConfig) -> None:
    # The worker keeps its conversation (warm workspace) and goes idle until the deadline.
    fields = {
        "load": 0,
        "heartbeat_at": now,
        "idle_since": now,
        "assigned_lease_id": "",
        "scheduled_shutdown_at": now + dt.timedelta(seconds=config.idle_timeout_seconds),
    }
    _update(Worker, fields, ("pk", "=", worker.pk))
    for name, value in fields.items():
        setattr(worker, name, value)


def requeue_dead_letters(message_ids, *, actor: str) -> int:
    """Give dead-lettered messages a fresh start (attempts reset); audited."""
    from agents.audit import record_audit

    with transaction.atomic():
        now = timezone.now()
        ids = list(
            Message.objects.select_for_update()
            .filter(pk__in=message_ids, status=Message.DEAD_LETTER)
            .values_list("pk", flat=True)
        )
        Message.objects.filter(pk__in=ids).update(
            status=Message.QUEUED,
            attempts=0,
            scheduled_for=now,
            dead_lettered_at=None,
            next_retry_at=None,
            claimed_by="",
            lease_id="",
            lease_expires_at=None,
        )
        if ids:
            record_audit(actor, "queue.requeue_dead_letters", None, message_ids=ids, count=len(ids))
    if ids:
        from workers.triggers import request_reconcile

        transaction.on_commit(request_reconcile)
    return len(ids)
