"""The autoscaler (SPEC §10): sweep leases, advance lifecycles, spawn for demand, tear down.

One reconcile runs at a time: on PostgreSQL a transaction-scoped advisory lock (a second
reconcile that cannot take it returns at once), on SQLite the IMMEDIATE write transaction.
Decisions are written in that one transaction; provider calls (spawn, teardown, which can
take seconds and talk to Fly) run after it commits, each for a worker row that is already
recorded — so a crash between the two never forgets a machine, and two reconciles never
spawn for the same demand.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from agents.audit import record_audit
from agents.models import Conversation, RuntimeConfig
from workers.leases import live_worker_cutoff, sweep_expired_leases
from workers.lifecycle import InvalidTransition, transition_worker
from workers.models import DataSnapshot, Message, Worker
from workers.providers import Provider, ProviderError, SpawnRequest, get_provider
from workers.tokens import mint_worker_token

logger = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 0x4146_5243  # "AFRC": agent factory reconcile
DEMAND_SCAN_ROWS = 64


@dataclass
class ReconcileReport:
    skipped: str | None = None
    swept: dict = field(default_factory=dict)
    demand: int = 0
    running: int = 0
    spawned: list[str] = field(default_factory=list)
    spawn_failed: list[str] = field(default_factory=list)
    drained: list[str] = field(default_factory=list)
    stopping: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    teardown_failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def changed(self) -> bool:
        return bool(
            self.spawned
            or self.drained
            or self.stopping
            or self.stopped
            or self.spawn_failed
            or self.swept.get("requeued")
            or self.swept.get("dead_lettered")
        )


def _take_lock() -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite: the IMMEDIATE transaction already serialises writers
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def _worker_api_url() -> str:
    return settings.AGENT_FACTORY_WORKER_API_URL or settings.PUBLIC_BASE_URL


def reconcile(*, actor: str = "system", now: dt.datetime | None = None) -> ReconcileReport:
    config = RuntimeConfig.get()
    provider = get_provider(config.provider_kind)
    report = ReconcileReport()
    # Observing processes/machines is I/O: do it before the transaction.
    gone = _observe_gone(provider)
    with transaction.atomic():
        if not _take_lock():
            report.skipped = "another reconcile is running"
            return report
        now = now or timezone.now()
        report.swept = sweep_expired_leases(now)
        _advance_lifecycles(config, provider, gone, now, report)
        to_spawn = _plan_spawns(config, provider, now, report)
        to_teardown = list(Worker.objects.filter(status=Worker.STOPPING, provider=provider.name))
    for worker, token in to_spawn:
        _spawn(provider, worker, token, report)
    for worker in to_teardown:
        _teardown(provider, worker, report)
    if report.changed or report.errors:
        with transaction.atomic():
            record_audit(actor, "workers.reconcile", None, **_audit_summary(report))
    return report


def _audit_summary(report: ReconcileReport) -> dict:
    return {
        "spawned": report.spawned,
        "spawn_failed": report.spawn_failed,
        "drained": report.drained,
        "stopped": report.stopped,
        "teardown_failed": report.teardown_failed,
        "errors": report.errors,
        "stopping": report.stopping,
        "swept": report.swept,
        "demand": report.demand,
    }


def _observe_gone(provider: Provider) -> set[int]:
    gone = set()
    for worker in Worker.objects.filter(provider=provider.name).exclude(status=Worker.STOPPED):
        if worker.process_id is None and not worker.machine_id:
            continue  # not spawned yet (or spawn in flight): nothing to observe
        try:
            if provider.is_gone(worker):
                gone.add(worker.pk)
        except ProviderError as exc:
            logger.warning("Could not observe worker %s: %s", worker.worker_id, exc)
    return gone


def _drain(worker: Worker, reason: str, now: dt.datetime, report: ReconcileReport) -> None:
    try:
        transition_worker(worker, Worker.DRAINING, reason=reason, now=now)
        report.drained.append(worker.worker_id)
    except InvalidTransition as exc:
        report.errors.append(str(exc))


def _to_stopping(worker: Worker, reason: str, now: dt.datetime, report: ReconcileReport) -> None:
    try:
        transition_worker(worker, Worker.STOPPING, reason=reason, now=now)
        report.stopping.append(worker.worker_id)
    except InvalidTransition as exc:
        report.errors.append(str(exc))


def _advance_lifecycles(config, provider, gone: set[int], now, report: ReconcileReport) -> None:
    stale_cutoff = live_worker_cutoff(now, config)
    active = Worker.objects.filter(status=Worker.ACTIVE)
    for worker in active.filter(pk__in=gone):
        _drain(worker, "machine gone", now, report)
    for worker in active.filter(Q(heartbeat_at__lt=stale_cutoff) | Q(heartbeat_at__isnull=True)):
        _drain(worker, "heartbeat stale", now, report)
    for worker in active.filter(scheduled_shutdown_at__lte=now, load=0):
        _drain(worker, "idle timeout", now, report)
    snapshot_deadline = now - dt.timedelta(seconds=config.snapshot_timeout_seconds)
    for worker in Worker.objects.filter(status=Worker.DRAINING):
        if worker.pk in gone or worker.status_reason == "machine gone":
            _to_stopping(worker, "machine gone", now, report)
        elif worker.last_claim_at is None:
            _to_stopping(worker, "never claimed: nothing to snapshot", now, report)
        elif _has_final_snapshot(worker):
            _to_stopping(worker, "final snapshot stored", now, report)
        elif worker.draining_since and worker.draining_since <= snapshot_deadline:
            _to_stopping(worker, "final snapshot timed out", now, report)
    # A stopping worker whose machine is already gone needs no teardown call.
    for worker in Worker.objects.filter(status=Worker.STOPPING, pk__in=gone):
        transition_worker(worker, Worker.STOPPED, reason="machine gone", now=now)
        report.stopped.append(worker.worker_id)


def _has_final_snapshot(worker: Worker) -> bool:
    return DataSnapshot.objects.filter(
        worker_id=worker.worker_id,
        status=DataSnapshot.READY,
        created_at__gte=worker.draining_since or worker.created_at,
    ).exists()


def _plan_spawns(config, provider, now, report: ReconcileReport) -> list[tuple[Worker, str]]:
    """Create rows (and tokens) for the workers to spawn; the provider is called later."""
    report.running = Worker.objects.exclude(status=Worker.STOPPED).count()
    if not provider.autoscale:
        return []
    cutoff = live_worker_cutoff(now, config)
    covered = Exists(
        Worker.objects.filter(
            assigned_conversation=OuterRef("conversation_id"),
            status=Worker.ACTIVE,
            heartbeat_at__gte=cutoff,
        )
    )
    leased = Exists(
        Message.objects.filter(
            conversation_id=OuterRef("conversation_id"),
            status=Message.PROCESSING,
            lease_expires_at__gt=now,
        )
    )
    slots = max(0, min(config.max_workers - report.running, config.spawn_step))
    # Walk the ready queue in claim order only as far as needed: the cost stays flat however
    # long the backlog is (the number of spawns per pass is small).
    rows = (
        Message.objects.filter(status=Message.QUEUED, scheduled_for__lte=now)
        .exclude(covered)
        .exclude(leased)
        .order_by("-priority", "scheduled_for", "id")
        .values_list("conversation_id", "agent_key")[: DEMAND_SCAN_ROWS + slots * 8]
    )
    targets: dict[int, str] = {}
    for conversation_pk, agent_key in rows:
        targets.setdefault(conversation_pk, agent_key)
    idle_unassigned = Worker.objects.filter(
        status=Worker.ACTIVE, assigned_conversation__isnull=True, heartbeat_at__gte=cutoff
    ).count()
    report.demand = max(0, len(targets) - idle_unassigned)
    planned = []
    for conversation_pk, agent_key in list(targets.items())[idle_unassigned:][:slots]:
        worker = Worker.objects.create(
            worker_id=f"{provider.name}-{secrets.token_hex(5)}",
            provider=provider.name,
            status=Worker.ACTIVE,
            heartbeat_at=now,  # boot grace: it counts as live until stale_after passes
            assigned_conversation_id=conversation_pk,
            assigned_agent_key=agent_key,
            assigned_at=now,
            scheduled_shutdown_at=now + dt.timedelta(seconds=config.idle_timeout_seconds),
        )
        planned.append((worker, mint_worker_token(worker)))
    return planned


def _spawn(provider: Provider, worker: Worker, token: str, report: ReconcileReport) -> None:
    conversation_id = (
        Conversation.objects.filter(pk=worker.assigned_conversation_id)
        .values_list("conversation_id", flat=True)
        .first()
    )
    request = SpawnRequest(
        worker_id=worker.worker_id,
        token=token,
        api_url=_worker_api_url(),
        conversation_id=conversation_id,
        agent_key=worker.assigned_agent_key or None,
    )
    try:
        result = provider.spawn(request)
    except ProviderError as exc:
        logger.warning("Spawning worker %s failed: %s", worker.worker_id, exc)
        Worker.objects.filter(pk=worker.pk).update(last_error=str(exc)[:2000])
        worker.refresh_from_db()
        transition_worker(worker, Worker.STOPPED, reason="spawn failed")
        report.spawn_failed.append(worker.worker_id)
        report.errors.append(f"spawn {worker.worker_id}: {exc}")
        return
    Worker.objects.filter(pk=worker.pk).update(
        machine_id=result.machine_id,
        machine_app=result.machine_app,
        machine_region=result.region,
        volume_id=result.volume_id,
        process_id=result.process_id,
    )
    report.spawned.append(worker.worker_id)


def _teardown(provider: Provider, worker: Worker, report: ReconcileReport) -> None:
    # A teardown that failed before is retried with force.
    force = bool(worker.last_error and worker.last_error.startswith("teardown:"))
    try:
        provider.teardown(worker, force=force)
    except ProviderError as exc:
        Worker.objects.filter(pk=worker.pk).update(last_error=f"teardown: {exc}"[:2000])
        report.teardown_failed.append(worker.worker_id)
        report.errors.append(f"teardown {worker.worker_id}: {exc}")
        return
    worker.refresh_from_db()
    transition_worker(worker, Worker.STOPPED, reason=worker.status_reason or "torn down")
    report.stopped.append(worker.worker_id)


def run_reconcile_task() -> dict:
    """Entry point for django-q2 (the one-minute schedule and the enqueue trigger)."""
    from django.core.cache import cache

    cache.delete(TRIGGER_CACHE_KEY)
    return reconcile().as_dict()


TRIGGER_CACHE_KEY = "agent-factory:reconcile-pending"
