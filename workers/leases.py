"""Lease fencing and retries (SPEC §6.2–6.3): the calls a worker makes under the lease its
claim handed out (``workers.claim``); the sweeper is in ``workers.sweep``.

Invariant this module keeps, under any interleaving of workers: a heartbeat, completion,
failure or delivery only lands with the live lease that the claim handed out (a late call
after expiry gets ``LeaseLost`` and changes nothing).
"""

from __future__ import annotations

import datetime as dt
import random
from contextlib import nullcontext

from django.db import transaction
from django.utils import timezone

from agents.models import RuntimeConfig
from workers import sql

# The claim lives in workers.claim; its callers (the worker API, tests) know it by these names.
from workers.claim import ClaimedJob, claim_next_job  # noqa: F401
from workers.dead_letters import dead_lettered
from workers.errors import LeaseLost  # defined with its 409 answer; leases.LeaseLost stays
from workers.job_events import announce_reply
from workers.models import JobUsage, Message, Worker
from workers.sweep import sweep_expired_leases  # noqa: F401 (schedule path)
from workers.tokens import Landed
from workers.usage import record_usage

# A job heartbeat refreshes the worker's own liveness only when it is older than this (far
# below stale_after), saving a write on most heartbeats.
LIVENESS_REFRESH = dt.timedelta(seconds=30)


def retry_delay_seconds(attempts: int, config: RuntimeConfig, rng=random) -> float:
    """Exponential backoff with up to 10 % jitter: min(max, base · factor^(attempts-1))."""
    exponent = max(0, attempts - 1)
    delay = min(config.retry_max_seconds, config.retry_base_seconds * config.retry_factor**exponent)
    return delay + delay * 0.1 * rng.random()


def _lease_conditions(worker_id, message_id: int, lease_id: str, now: dt.datetime):
    """``(field, operator, value)`` conditions that hold only while worker ``worker_id`` (or
    ``sql.TOKEN_OWNER_ID``) holds the live lease ``lease_id`` on the message: the one
    definition of the fence."""
    if not lease_id or not isinstance(lease_id, str):
        raise LeaseLost()
    return (
        ("pk", "=", message_id),
        ("status", "=", Message.PROCESSING),
        ("claimed_by", "=", worker_id),
        ("lease_id", "=", lease_id),
        ("lease_expires_at", ">", now),
    )


_LOOKUP_BY_OPERATOR = {"=": "exact", ">": "gt"}


def fenced(worker: Worker, message_id: int, lease_id: str, now: dt.datetime):
    """The queryset that matches only while ``worker`` holds the live lease ``lease_id``.

    Every lease-guarded write filters through it (or ``_fenced_update``), so the check and
    the write are one statement (or one locked read) and a lease cannot expire in between.
    """
    conditions = _lease_conditions(worker.worker_id, message_id, lease_id, now)
    return Message.objects.filter(
        **{f"{name}__{_LOOKUP_BY_OPERATOR[op]}": value for name, op, value in conditions}
    )


def _fenced_update(worker: Worker, message_id: int, lease_id: str, now, values: dict) -> int:
    """The write of ``fenced`` in one statement: it lands only while the lease is live."""
    return sql.update(
        Message, values, *_lease_conditions(worker.worker_id, message_id, lease_id, now)
    )


def get_leased_message(worker: Worker, message_id: int, lease_id: str) -> Message:
    message = fenced(worker, message_id, lease_id, timezone.now()).first()
    if message is None:
        raise LeaseLost()
    return message


def _fence_by_token(message_id: int, lease_id: str, now: dt.datetime):
    """The fence naming the token's owner (``sql.TOKEN_OWNER_ID``), or None where a write by
    token cannot run or the lease id could never hold: the usual path then answers."""
    if not sql.writes_by_token():
        return None
    try:
        return _lease_conditions(sql.TOKEN_OWNER_ID, message_id, lease_id, now)
    except LeaseLost:
        return None


def heartbeat_job(worker: Worker, message_id: int, lease_id: str) -> dt.datetime:
    config = RuntimeConfig.get_cached()
    now = timezone.now()
    expires = now + dt.timedelta(seconds=config.lease_seconds)
    # One conditional UPDATE: it lands only while the lease is held and alive.
    if _fenced_update(worker, message_id, lease_id, now, {"lease_expires_at": expires}) != 1:
        raise LeaseLost()
    if worker.heartbeat_at is None or worker.heartbeat_at < _liveness_due(now, config):
        sql.update(Worker, {"heartbeat_at": now}, ("pk", "=", worker.pk))
    return expires


def _liveness_due(now: dt.datetime, config: RuntimeConfig) -> dt.datetime:
    """A job heartbeat refreshes its worker's liveness when it is older than this."""
    return now - min(LIVENESS_REFRESH, dt.timedelta(seconds=config.stale_after_seconds / 4))


def heartbeat_by_token(token, message_id: int, lease_id: str) -> Landed | None:
    """``heartbeat_job`` of the worker owning ``token`` (a ``workers.tokens.WorkerToken``)
    in one statement with its authentication (``sql.write_by_token``): the usual answer
    when it landed; None when it did not (or cannot run here), having written nothing: the
    caller then authenticates and ``heartbeat_job`` answers (401, or the lease lost)."""
    now = timezone.now()
    fence = _fence_by_token(message_id, lease_id, now)
    if fence is None:
        return None
    config = RuntimeConfig.get_cached()
    expires = now + dt.timedelta(seconds=config.lease_seconds)
    worker_id = sql.write_by_token(
        token,
        {"lease_expires_at": expires},
        fence,
        {"heartbeat_at": now},
        worker_beat_before=_liveness_due(now, config),
    )
    return Landed(worker_id, expires) if worker_id else None


def _done_fields(now: dt.datetime) -> dict:
    return {
        "status": Message.DONE,
        "completed_at": now,
        "lease_expires_at": None,
        "last_error": "",
    }


def complete_job(worker: Worker, message_id: int, lease_id: str, usage: dict | None = None) -> None:
    config = RuntimeConfig.get_cached()
    now = timezone.now()
    fence = _lease_conditions(worker.worker_id, message_id, lease_id, now)
    idle = _idle_fields(now, config)
    # Usage rows ride in the finish's transaction; without usage the finish is one statement.
    with transaction.atomic() if usage else nullcontext():
        if not sql.finish_job(fence, _done_fields(now), worker.pk, idle):
            raise LeaseLost()
        record_usage(message_id, usage, JobUsage.DONE, now)
    for name, value in idle.items():
        setattr(worker, name, value)


def complete_by_token(token, message_id: int, lease_id: str) -> Landed | None:
    """``complete_job`` without usage, by token, as ``heartbeat_by_token`` does the
    heartbeat: the finish and the worker's going idle in one statement with its
    authentication; None when it did not land (the caller then takes the usual path)."""
    now = timezone.now()
    fence = _fence_by_token(message_id, lease_id, now)
    if fence is None:
        return None
    config = RuntimeConfig.get_cached()
    worker_id = sql.write_by_token(token, _done_fields(now), fence, _idle_fields(now, config))
    return Landed(worker_id, None) if worker_id else None


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
