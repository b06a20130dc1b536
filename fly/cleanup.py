"""Billing protection: destroy every machine and volume of one Fly app (SPEC §11).

Dry run by default. One failing machine or volume never stops the others; every failure is
reported, and a verification pass lists what is still there.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from agents.audit import record_audit
from agents.models import RuntimeConfig
from fly.client import FlyApiError, FlyClient, FlyConfigurationError
from workers.lifecycle import end_leases_held_by, transition_worker
from workers.models import Worker
from workers.reconcile import reconcile_lock
from workers.scheduling import register_schedules

CLEANUP_LOCK_WAIT_SECONDS = 60


class CleanupError(Exception):
    pass


def resolve_app(app: str | None) -> str:
    config = RuntimeConfig.get()
    target = (app or config.app_name or "").strip()
    if not target:
        raise CleanupError(
            "Fly cleanup requires a non-empty Fly app name (configure one or --app)."
        )
    if app is None and config.provider_kind != "fly":
        raise CleanupError("Fly cleanup requires a Fly provider configuration (or --app).")
    return target


def run_fly_cleanup(
    *,
    app: str | None = None,
    apply: bool = False,
    actor: str = "system",
    client: FlyClient | None = None,
) -> dict:
    target = resolve_app(app)
    try:
        client = client or FlyClient()
    except FlyConfigurationError as exc:
        raise CleanupError(str(exc))
    if not apply:
        return _cleanup(client, target, apply=False, actor=actor, lock_held=True)
    # No reconcile may spawn or tear down while the app is being emptied: one could create
    # a machine after the listing (left running) or race the destroys.
    with reconcile_lock(wait_seconds=CLEANUP_LOCK_WAIT_SECONDS) as held:
        return _cleanup(client, target, apply=True, actor=actor, lock_held=held)


def _cleanup(client: FlyClient, target: str, *, apply: bool, actor: str, lock_held: bool):
    try:
        client.get_app(target)  # access check before anything is destroyed
        machines = client.list_machines(target)
    except FlyApiError as exc:
        if apply:  # an attempted destructive run leaves a trace even when it cannot start
            with transaction.atomic():
                record_audit(actor, "fly.cleanup_failed", target, app_name=target, error=str(exc))
        raise CleanupError(str(exc))
    report = {
        "app_name": target,
        "dry_run": not apply,
        "machines_found": len(machines),
        "machines_deleted": 0,
        "machines_remaining": 0,
        "machine_ids_found": [m.get("id") for m in machines],
        "machine_ids_deleted": [],
        "machine_ids_remaining": [],
        "volumes_found": 0,
        "volumes_deleted": 0,
        "volumes_remaining": 0,
        "volume_ids_found": [],
        "volume_ids_deleted": [],
        "volume_ids_remaining": [],
        "workers_stopped": 0,
        "warnings": [],
        "errors": [],
    }
    if not lock_held:
        report["warnings"].append(
            f"A reconcile pass was still running after {CLEANUP_LOCK_WAIT_SECONDS} s; "
            "the cleanup went ahead anyway."
        )
    if apply:
        for machine in machines:
            _destroy_machine(client, target, machine["id"], report)
        _verify(client.list_machines, target, machines, "machine", report)
    # Volumes are listed (and destroyed) even when machines failed: they bill on their own.
    try:
        volumes = client.list_volumes(target)
    except FlyApiError as exc:
        report["errors"].append(f"Volume listing failed ({exc})")
        volumes = []
    report["volumes_found"] = len(volumes)
    report["volume_ids_found"] = [v.get("id") for v in volumes]
    if apply:
        for volume in volumes:
            _destroy_volume(client, target, volume["id"], report)
        _verify(client.list_volumes, target, volumes, "volume", report)
        report["workers_stopped"] = _stop_worker_rows(target, report["machine_ids_deleted"])
        with transaction.atomic():
            record_audit(actor, "fly.cleanup", target, **report)
    return report


def _verify(list_again, app: str, found: list, kind: str, report: dict) -> None:
    """What Fly still lists after the destroys is reported as remaining. If the list itself
    fails, everything found counts as still there (never report a clean app unchecked)."""
    try:
        remaining = list_again(app)
    except FlyApiError as exc:
        report["errors"].append(f"{kind.capitalize()} verification failed ({exc})")
        remaining = found
    _report_remaining(report, kind, remaining)


def _destroy_machine(client: FlyClient, app: str, machine_id: str, report: dict) -> None:
    for label, step in (("cordon", client.cordon_machine), ("stop", client.stop_machine)):
        try:
            step(app, machine_id)
        except FlyApiError as exc:
            if exc.not_found:
                _deleted(report, "machine", machine_id)
                return
            report["warnings"].append(f"Machine {machine_id}: {label} warning ({exc})")
    _destroy(
        report, "machine", machine_id, lambda: client.destroy_machine(app, machine_id, force=True)
    )


def _destroy_volume(client: FlyClient, app: str, volume_id: str, report: dict) -> None:
    _destroy(report, "volume", volume_id, lambda: client.delete_volume(app, volume_id))


def _destroy(report: dict, kind: str, item_id: str, destroy) -> None:
    """Run ``destroy``; one Fly no longer knows (404) is gone all the same."""
    try:
        destroy()
    except FlyApiError as exc:
        if not exc.not_found:
            report["errors"].append(f"{kind.capitalize()} {item_id}: destroy failed ({exc})")
            return
    _deleted(report, kind, item_id)


def _deleted(report: dict, kind: str, item_id: str) -> None:
    report[f"{kind}s_deleted"] += 1
    report[f"{kind}_ids_deleted"].append(item_id)


def _report_remaining(report: dict, kind: str, items: list[dict]) -> None:
    ids = [item.get("id") for item in items]
    report[f"{kind}s_remaining"] = len(ids)
    report[f"{kind}_ids_remaining"] = ids
    if ids:
        report["warnings"].append(
            f"Fly cleanup left {len(ids)} {kind}(s) after verification: {', '.join(ids)}"
        )


def _stop_worker_rows(app: str, machine_ids: list[str]) -> int:
    stopped = 0
    for worker in Worker.objects.filter(machine_id__in=machine_ids).exclude(status="stopped"):
        if worker.machine_app and worker.machine_app != app:
            continue
        with transaction.atomic():
            transition_worker(worker, Worker.STOPPED, reason="removed by Fly cleanup")
            # Its machine is destroyed: its job's lease ends now, so the next sweep requeues
            # the job instead of waiting the lease out.
            end_leases_held_by([worker.worker_id], timezone.now())
        stopped += 1
    return stopped


def run_scheduled_cleanup() -> dict | None:
    """The nightly schedule: only when enabled in the runtime config."""
    config = RuntimeConfig.get()
    if not config.fly_cleanup_nightly or config.provider_kind != "fly":
        return None
    return run_fly_cleanup(apply=True, actor="schedule:fly-cleanup-nightly")


def sync_nightly_schedule(sender, instance, raw=False, **kwargs) -> None:
    """post_save of the runtime config: (un)register the nightly cleanup schedule at once,
    so switching ``fly_cleanup_nightly`` in the admin takes effect without a restart."""
    if raw:
        return

    transaction.on_commit(register_schedules, robust=True)  # a schedule hiccup never fails a save
