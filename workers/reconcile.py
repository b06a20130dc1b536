"""The autoscaler (SPEC §10): sweep leases, advance lifecycles, spawn for demand, tear down.

One reconcile runs at a time, for the whole pass including the provider calls: on
PostgreSQL a session advisory lock, elsewhere (SQLite, one machine) an exclusive file lock.
A reconcile that cannot take it returns at once (or waits a little, when asked).
Decisions are written in one transaction; provider calls (spawn, teardown, which can take
seconds and talk to Fly) run after it commits, each for a worker row that is already
recorded — so a crash between the two never forgets a machine, and two reconciles never
spawn for the same demand.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Exists, Max, OuterRef, Q
from django.utils import timezone

from agents.audit import record_audit
from agents.budget import without_paused_agents
from agents.models import AuditEvent, Conversation, RuntimeConfig
from agents.secret_store import SecretUnavailable
from workers.fair_share import reassign_idle_workers
from workers.leases import live_worker_cutoff, live_workers, sweep_expired_leases
from workers.lifecycle import InvalidTransition, end_leases_held_by, transition_worker
from workers.models import DataSnapshot, Message, Worker
from workers.providers import (
    Provider,
    ProviderError,
    SpawnFailed,
    SpawnRequest,
    SpawnResult,
    get_provider,
)
from workers.tokens import mint_worker_token

logger = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 0x4146_5243  # "AFRC": agent factory reconcile
DEMAND_SCAN_ROWS = 64
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


def _discard_connection() -> None:
    raw = connection.connection
    if raw is not None:
        with contextlib.suppress(Exception):
            raw.close()  # the pool discards a closed connection instead of reusing it
    with contextlib.suppress(DatabaseError):
        connection.close()


@contextlib.contextmanager
def reconcile_lock(wait_seconds: float = 0.0):
    """Yield True while holding the single-reconcile lock, False if it stayed taken.

    Held for the whole pass, provider calls included, so two passes never tear down (or
    observe) the same worker at once. A session-level lock dies with its connection, so a
    crashed reconcile never leaves it held.
    """
    deadline = time.monotonic() + wait_seconds
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:

            def try_lock() -> bool:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
                return bool(cursor.fetchone()[0])

            held = _keep_trying(try_lock, deadline)
        try:
            yield held
        finally:
            if held:
                try:
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])
                except DatabaseError:
                    # Do not mask the error that broke the connection. Close it for real so
                    # the lock dies with the session: a pooled connection handed back with
                    # the lock still held would block every later pass.
                    logger.warning("Could not release the reconcile lock explicitly.")
                    _discard_connection()
        return
    import fcntl

    path = _lock_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:

        def try_lock() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        held = _keep_trying(try_lock, deadline)
        try:
            yield held
        finally:
            if held:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _keep_trying(attempt, deadline: float) -> bool:
    """Call ``attempt`` every 0.2 s until it returns True or ``deadline`` (monotonic) passes."""
    while True:
        if attempt():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _lock_file() -> Path:
    """The lock belongs to the database it guards: next to the SQLite file (so two
    databases on one machine, e.g. parallel test runs, never block each other)."""
    name = str(connection.settings_dict.get("NAME") or "")
    if name and name != ":memory:" and not name.startswith("file:"):
        return Path(f"{name}.reconcile.lock")
    return Path(settings.VAR_DIR) / "reconcile.lock"


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
        with _traced_pass():
            _reconcile_locked(actor, now, report)
    return report


@contextlib.contextmanager
def _traced_pass():
    """With ``AGENT_FACTORY_RECONCILE_TRACE_FILE`` set (diagnostics, the scale-out test),
    append a ``begin`` line once the lock is held and an ``end`` line before it is released:
    ``<monotonic ns> <pid> <pass id> <begin|end>``. The monotonic clock is system-wide on
    Linux, so lines from every process on one machine compare, and two passes that ever ran
    at once show as overlapping intervals."""
    path = settings.AGENT_FACTORY_RECONCILE_TRACE_FILE
    if not path:
        yield
        return
    pass_id = secrets.token_hex(6)
    _trace(path, pass_id, "begin")
    try:
        yield
    finally:
        _trace(path, pass_id, "end")


def _trace(path: str, pass_id: str, event: str) -> None:
    # One write to a file opened for appending: lines from concurrent processes never mix.
    line = f"{time.monotonic_ns()} {os.getpid()} {pass_id} {event}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


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
    covered = Exists(
        live_workers(now, config).filter(assigned_conversation=OuterRef("conversation_id"))
    )
    leased = Exists(
        Message.objects.filter(
            conversation_id=OuterRef("conversation_id"),
            status=Message.PROCESSING,
            lease_expires_at__gt=now,
        )
    )
    capacity = max(0, config.max_workers - report.running)
    slots = min(capacity, config.spawn_step)
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
    targets = without_paused_agents(targets, now)  # budget cap (SPEC §24): no spawn
    idle_unassigned = live_workers(now, config).filter(assigned_conversation__isnull=True).count()
    uncovered = list(targets.items())[idle_unassigned:]
    report.demand = len(uncovered)
    wanted = uncovered[:slots]
    # Fair share (§6.2): what no spawn, now or later, can cover goes to the idle workers.
    report.reassigned = reassign_idle_workers(uncovered[capacity:], config, now)
    if wanted:
        report.blocked = _spawn_blocked(provider, now)
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


def _spawn_blocked(provider: Provider, now: dt.datetime) -> str | None:
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


def _claim_spawn(worker: Worker) -> bool:
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


def _spawn(provider: Provider, worker: Worker, token: str, report: ReconcileReport) -> None:
    if not _claim_spawn(worker):
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
        result = _provider_spawn(provider, worker, request)
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


def _provider_spawn(provider: Provider, worker: Worker, request: SpawnRequest) -> SpawnResult:
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


# The enqueue trigger is throttled per process for this long; the pass it queued runs once
# more at the end of that window, so an enqueue that the throttle swallowed is still seen.
TRIGGER_WINDOW_SECONDS = 2.0
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
