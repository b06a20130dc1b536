"""The workers app's django-q2 schedules (assembled with every app's by config/schedules.py)."""

from __future__ import annotations

from workers.scheduling import Scheduled

SCHEDULES = [
    Scheduled("reconcile-workers", "workers.reconcile.run_reconcile_task", "I", 1),
    Scheduled("sweep-expired-leases", "workers.leases.sweep_expired_leases", "I", 1),
    Scheduled("expire-snapshots", "workers.snapshots.expire_old_snapshots", "H", None),
    # Reply media (SPEC §22): files sent, never attached, or past retention.
    Scheduled("sweep-reply-uploads", "workers.reply_uploads.sweep_reply_uploads", "H", None),
]
