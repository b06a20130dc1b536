"""Spawning one worker, for reconcile (SPEC §10): whether spawning may happen now (provider
usable, backoff after failures), and the right to spawn a planned worker row, taken once.

The reasons below mark a spawned row's progress in ``Worker.status_reason``.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db.models import Count, Max

from agents.secret_store import SecretUnavailable
from workers.models import Worker
from workers.providers import Provider, ProviderError, SpawnFailed, SpawnRequest, SpawnResult

logger = logging.getLogger(__name__)

# Rows a reconcile created and has not handed to the provider yet: the spawn "claims" the
# row by moving it off this reason, so a worker id is given to the provider at most once.
SPAWN_PENDING = "spawn pending"
SPAWNING = "spawning"
SPAWNED = "spawned"
# The reason a failed spawn's row keeps (through teardown): the spawn backoff counts them.
SPAWN_FAILED = "spawn failed"


# After a failed spawn, spawning pauses (30 s, doubling per failure in the window, at most
# 15 min): a bad image or a missing token must not mint a failed worker row (and a Fly
# volume create/delete) on every pass and every enqueue.
SPAWN_BACKOFF_WINDOW = dt.timedelta(minutes=15)
SPAWN_BACKOFF_BASE_SECONDS = 30
SPAWN_BACKOFF_MAX_SECONDS = 900


def spawn_blocked(provider: Provider, now: dt.datetime) -> str | None:
    """Why spawning should not happen now, or None. Two queries at most, whatever the load."""
    try:
        provider.preflight()
    except ProviderError as exc:
        return f"provider '{provider.name}' is not usable: {exc}"
    recent = Worker.objects.filter(
        status_reason=SPAWN_FAILED, created_at__gte=now - SPAWN_BACKOFF_WINDOW
    ).aggregate(failures=Count("id"), last=Max("created_at"))
    if not recent["failures"]:
        return None
    delay = min(
        SPAWN_BACKOFF_BASE_SECONDS * 2 ** (recent["failures"] - 1), SPAWN_BACKOFF_MAX_SECONDS
    )
    resume = recent["last"] + dt.timedelta(seconds=delay)
    if resume <= now:
        return None
    last_error = (
        Worker.objects.filter(status_reason=SPAWN_FAILED)
        .order_by("-created_at")
        .values_list("last_error", flat=True)
        .first()
    )
    return (
        f"spawning paused for {int((resume - now).total_seconds())} s after "
        f"{recent['failures']} failed spawn(s); last error: {(last_error or '')[:300]}"
    )


def claim_spawn(worker: Worker) -> bool:
    """Take the right to spawn ``worker`` (once per worker id, whoever asks)."""
    return (
        Worker.objects.filter(
            pk=worker.pk,
            status=Worker.ACTIVE,
            status_reason=SPAWN_PENDING,
            machine_id="",
            process_id__isnull=True,
        ).update(status_reason=SPAWNING)
        == 1
    )


def provider_spawn(provider: Provider, worker: Worker, request: SpawnRequest) -> SpawnResult:
    """``provider.spawn``; an unexpected error (a bug, an unforeseen reply) becomes a
    SpawnFailed: what was created is unknown, so the row goes through teardown (which finds
    a Fly machine or volume by the worker's name)."""
    try:
        return provider.spawn(request)
    except ProviderError:
        raise
    except SecretUnavailable as exc:
        # A secret the machine needs cannot be decrypted: a clear reason, not a traceback.
        raise SpawnFailed(str(exc), SpawnResult())
    except Exception as exc:
        logger.exception("Spawning worker %s failed unexpectedly", worker.worker_id)
        raise SpawnFailed(f"unexpected error: {type(exc).__name__}: {exc}", SpawnResult())
