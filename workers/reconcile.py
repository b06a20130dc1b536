"""The autoscaler (SPEC §10): sweep leases, advance lifecycles, spawn for demand, tear down.

One reconcile runs at a time, for the whole pass including the provider calls
(``workers.reconcile_lock``). A reconcile that cannot take the lock returns at once (or
waits a little, when asked). Decisions are written in one transaction; provider calls
(spawn, teardown, which can take seconds and talk to Fly) run after it commits, each for a
worker row that is already recorded — so a crash between the two never forgets a machine,
and two reconciles never spawn for the same demand.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.audit import record_audit
from agents.budget import without_paused_agents
from agents.models import AuditEvent, Conversation, RuntimeConfig
from workers.fair_share import reassign_idle_workers
from workers.lifecycle import (
    InvalidTransition,
    end_leases_held_by,
    live_worker_cutoff,
    live_workers,
    transition_worker,
)
from workers.models import DataSnapshot, Message, Worker
from workers.providers import (
    Provider,
    ProviderError,
    SpawnFailed,
    SpawnRequest,
    get_provider,
)
from workers.reconcile_lock import reconcile_lock, traced_pass
from workers.spawning import (
    SPAWN_FAILED,
    SPAWN_PENDING,
    SPAWNED,
    SPAWNING,
    claim_spawn,
    provider_spawn,
    spawn_blocked,
)
from workers.sweep import sweep_expired_leases
from workers.tokens import mint_worker_token
from workers.triggers import TRIGGER_WINDOW_SECONDS

logger = logging.getLogger(__name__)

DEMAND_SCAN_ROWS = 64


@dataclass
class ReconcileReport:
    skipped: str | None = None
    #: Why no worker was spawned although there was demand (misconfigured provider, backoff).
    blocked: str | None = None
    swept: dict = field(default_factory=dict)
    demand: int = 0
    running: int = 0
    spawned: list[str] = field(default_factory=list)
    #: Fair share (SPEC §6.2): idle workers moved to waiting conversations, "worker: a -> b".
    reassigned: list[str] = field(default_factory=list)
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
            or self.reassigned
            or self.drained
            or self.stopping
            or self.stopped
            or self.spawn_failed
            or self.swept.get("requeued")
            or self.swept.get("dead_lettered")
        )


def _worker_api_url() -> str:
    return settings.AGENT_FACTORY_WORKER_API_URL or settings.PUBLIC_BASE_URL


def reconcile(
    *, actor: str = "system", now: dt.datetime | None = None, wait_seconds: float = 0.0
) -> ReconcileReport:
    report = ReconcileReport()
    with reconcile_lock(wait_seconds) as held:
        if not held:
            report.skipped = "another reconcile is running"
            return report
        with traced_pass():
            _reconcile_locked(actor, now, report)
    return report


def _reconcile_locked(actor: str, now: dt.datetime | None, report: ReconcileReport) -> None:
    config = RuntimeConfig.get()
    provider = get_provider(config.provider_kind)
    # Observing processes/machines is I/O: do it before the transaction.
    gone = _observe_gone(provider)
    with transaction.atomic():
        now = now or timezone.now()
        _expire_leases_of_gone(gone, now)
        report.swept = sweep_expired_leases(now)
        _advance_lifecycles(config, provider, gone, now, report)
        to_spawn = _plan_spawns(config, provider, now, report)
        to_teardown = list(Worker.objects.filter(status=Worker.STOPPING).order_by("pk"))
    for worker, token in to_spawn:
        _spawn(provider, worker, token, report)
    providers = {provider.name: provider}
    for worker in to_teardown:
        _teardown(providers, worker, report)
    # Audit what changed, and errors when they are new: a teardown that keeps failing the
    # same way (say, a revoked Fly token) is recorded once, not on every pass.
    if report.changed or (report.errors and report.errors != _last_audited_errors()):
        with transaction.atomic():
            record_audit(actor, "workers.reconcile", None, **_audit_summary(report))


def _last_audited_errors() -> list[str] | None:
    details = (
        AuditEvent.objects.filter(action="workers.reconcile")
        .order_by("-id")
        .values_list("details", flat=True)
        .first()
    )
    return (details or {}).get("errors")


def _expire_leases_of_gone(gone: set[int], now: dt.datetime) -> None:
    """End the leases of workers observed gone, so the sweep that follows requeues them."""
    if not gone:
        return
    worker_ids = list(Worker.objects.filter(pk__in=gone).values_list("worker_id", flat=True))
    end_leases_held_by(worker_ids, now)


def _audit_summary(report: ReconcileReport) -> dict:
    return {
        "spawned": report.spawned,
        "reassigned": report.reassigned,
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


def _drain(
    worker: Worker, reason: str, now: dt.datetime, report: ReconcileReport, *, alive: bool = True
) -> None:
    # Only a live worker's conversation is handed off: a gone or stale one sends no snapshot.
    try:
        transition_worker(worker, Worker.DRAINING, reason=reason, now=now, alive=alive)
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
        _drain(worker, "machine gone", now, report, alive=False)
    # A row never heard from (a token just issued for a hand-started worker) is judged by
    # its age, so it gets the same stale_after to show up as a worker that went quiet.
    never_seen_too_long = Q(heartbeat_at__isnull=True, created_at__lt=stale_cutoff)
    for worker in active.filter(Q(heartbeat_at__lt=stale_cutoff) | never_seen_too_long):
        _drain(worker, "heartbeat stale", now, report, alive=False)
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
    # A worker whose machine is gone still goes through teardown: a dead or destroyed Fly
    # machine can leave its volume behind (billed), and "not found" counts as done anyway.


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
    capacity = max(0, config.max_workers - report.running)
    slots = min(capacity, config.spawn_step)
    # Walk the ready queue in claim order only as far as needed: the cost stays flat however
    # long the backlog is (the number of spawns per pass is small).
    rows = Message.objects.claim_candidates(now, live_workers(now, config)).values_list(
        "conversation_id", "agent_key"
    )[: DEMAND_SCAN_ROWS + slots * 8]
    targets: dict[int, str] = {}
    for conversation_pk, agent_key in rows:
        targets.setdefault(conversation_pk, agent_key)
    targets = without_paused_agents(targets, now)  # budget cap (SPEC §24): no spawn
    idle_unassigned = live_workers(now, config).filter(assigned_conversation__isnull=True).count()
    uncovered = list(targets.items())[idle_unassigned:]
    report.demand = len(uncovered)
    wanted = uncovered[:slots]
    # Fair share (§6.2): what no spawn, now or later, can cover goes to the idle workers.
    report.reassigned = reassign_idle_workers(uncovered[capacity:], config, now)
    if wanted:
        report.blocked = spawn_blocked(provider, now)
        if report.blocked:
            logger.warning("Not spawning: %s", report.blocked)
            return []
    planned = []
    for conversation_pk, agent_key in wanted:
        worker = Worker.objects.create(
            worker_id=f"{provider.name}-{secrets.token_hex(5)}",
            provider=provider.name,
            status=Worker.ACTIVE,
            heartbeat_at=now,  # boot grace: it counts as live until stale_after passes
            assigned_conversation_id=conversation_pk,
            assigned_agent_key=agent_key,
            assigned_at=now,
            scheduled_shutdown_at=now + dt.timedelta(seconds=config.idle_timeout_seconds),
            status_reason=SPAWN_PENDING,
        )
        planned.append((worker, mint_worker_token(worker)))
    return planned


def _spawn(provider: Provider, worker: Worker, token: str, report: ReconcileReport) -> None:
    if not claim_spawn(worker):
        return  # already spawned, being spawned, or drained meanwhile
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
        result = provider_spawn(provider, worker, request)
    except ProviderError as exc:
        logger.warning("Spawning worker %s failed: %s", worker.worker_id, exc)
        leftover = exc.leftover if isinstance(exc, SpawnFailed) else None
        with transaction.atomic():
            fields = {"last_error": str(exc)[:2000]}
            if leftover is not None:
                fields.update(
                    machine_id=leftover.machine_id,
                    machine_app=leftover.machine_app,
                    machine_region=leftover.region,
                    volume_id=leftover.volume_id,
                )
            Worker.objects.filter(pk=worker.pk).update(**fields)
            worker.refresh_from_db()
            # Something may be left (and billed): keep the row in teardown until it is gone.
            target = Worker.STOPPING if leftover is not None else Worker.STOPPED
            transition_worker(worker, target, reason=SPAWN_FAILED)
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
    Worker.objects.filter(pk=worker.pk, status_reason=SPAWNING).update(status_reason=SPAWNED)
    report.spawned.append(worker.worker_id)


def _teardown(providers: dict, worker: Worker, report: ReconcileReport) -> None:
    # Each worker is torn down by the provider that runs it, even after the configured
    # provider changed: switching to Fly must not strand local processes (or vice versa).
    try:
        if worker.provider not in providers:
            providers[worker.provider] = get_provider(worker.provider)
        provider = providers[worker.provider]
        # A teardown that failed before is retried with force.
        force = bool(worker.last_error and worker.last_error.startswith("teardown:"))
        provider.teardown(worker, force=force)
    except ProviderError as exc:
        Worker.objects.filter(pk=worker.pk).update(last_error=f"teardown: {exc}"[:2000])
        report.teardown_failed.append(worker.worker_id)
        report.errors.append(f"teardown {worker.worker_id}: {exc}")
        return
    worker.refresh_from_db()
    try:
        transition_worker(worker, Worker.STOPPED, reason=worker.status_reason or "torn down")
    except InvalidTransition as exc:
        report.errors.append(str(exc))
        return
    report.stopped.append(worker.worker_id)


TRIGGER_WAIT_SECONDS = 30.0


def run_reconcile_task(triggered_at: float | None = None) -> dict:
    """Entry point for django-q2: the one-minute schedule (no argument) and the enqueue
    trigger (``triggered_at``: when the throttle window opened, wall-clock seconds)."""
    from django_q.conf import Conf

    if triggered_at is None:
        return reconcile(actor="schedule:reconcile-workers").as_dict()
    if Conf.SYNC:
        # django-q2 "sync" (tests, debugging) runs this inline right after the enqueue
        # committed, inside the caller: one pass, no waiting on a lock or a window.
        return reconcile(actor="trigger:enqueue").as_dict()
    # A trigger must not be lost to a pass already running: wait for it to finish.
    report = reconcile(actor="trigger:enqueue", wait_seconds=TRIGGER_WAIT_SECONDS)
    remaining = triggered_at + TRIGGER_WINDOW_SECONDS - time.time()
    if remaining > 0:
        time.sleep(remaining)
    window_opened = dt.datetime.fromtimestamp(triggered_at - 5, tz=dt.UTC)
    if Message.objects.filter(status=Message.QUEUED, created_at__gte=window_opened).exists():
        report = reconcile(actor="trigger:enqueue", wait_seconds=TRIGGER_WAIT_SECONDS)
    return report.as_dict()
