"""django-q2 schedules, registered idempotently by ``manage.py register_schedules``.

Functions are named by dotted path so this module imports no app code. Missed runs are
never replayed (``Q_CLUSTER["catch_up"] = False``): each function is safe to run late.
"""

from __future__ import annotations

from agents.pushing.schedules import SCHEDULES as PUSHING_SCHEDULES

SCHEDULES = [
    # (name, function, schedule type, minutes for "I" / "HH:MM" UTC for "D" / None)
    ("reconcile-workers", "workers.reconcile.run_reconcile_task", "I", 1),
    ("sweep-expired-leases", "workers.leases.sweep_expired_leases", "I", 1),
    ("expire-snapshots", "workers.snapshots.expire_old_snapshots", "H", None),
    ("expire-attachments", "telegram.media.expire_old_attachments", "H", None),
    # Dedupe rows are kept at least 48 h (Telegram redelivers for 24 h), then pruned.
    ("prune-telegram-updates", "telegram.tasks.prune_old_updates", "H", None),
]
SCHEDULES += PUSHING_SCHEDULES  # plain data; the app declares its own (dispatch every minute)
# Daily at 03:00 UTC rather than a cron expression: cron schedules need croniter, which is
# not a dependency, and a daily schedule with its first run set to 03:00 is the same thing.
NIGHTLY_FLY_CLEANUP = ("fly-cleanup-nightly", "fly.cleanup.run_scheduled_cleanup", "D", "03:00")
