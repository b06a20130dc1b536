"""django-q2 schedules, registered idempotently by ``manage.py register_schedules``.

Functions are named by dotted path so this module imports no app code.
"""

from __future__ import annotations

SCHEDULES = [
    # (name, function, schedule type, minutes or cron)
    ("reconcile-workers", "workers.reconcile.run_reconcile_task", "I", 1),
    ("sweep-expired-leases", "workers.leases.sweep_expired_leases", "I", 1),
    ("expire-snapshots", "workers.snapshots.expire_old_snapshots", "H", None),
    ("expire-attachments", "telegram.media.expire_old_attachments", "H", None),
]
NIGHTLY_FLY_CLEANUP = ("fly-cleanup-nightly", "fly.cleanup.run_scheduled_cleanup", "C", "0 3 * * *")
