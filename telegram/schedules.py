"""The telegram app's django-q2 schedules (assembled with every app's by config/schedules.py)."""

from __future__ import annotations

from workers.scheduling import Scheduled

SCHEDULES = [
    Scheduled("expire-attachments", "telegram.media.expire_old_attachments", "H", None),
    # Dedupe rows are kept at least 48 h (Telegram redelivers for 24 h), then pruned.
    Scheduled("prune-telegram-updates", "telegram.tasks.prune_old_updates", "H", None),
]
