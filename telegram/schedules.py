"""The telegram app's django-q2 schedules (assembled with every app's by config/schedules.py)."""

from __future__ import annotations

from workers.scheduling import Scheduled

SCHEDULES = [
    Scheduled("expire-attachments", "telegram.media.expire_old_attachments", "H", None),
    # Dedupe rows are kept at least 48 h (Telegram redelivers for 24 h), then pruned.
    # The outbox's safety net (SPEC §22): rows whose after-commit sender never ran, rows
    # due after a backoff or a 429 pause, rows stuck in sending.
    Scheduled("drain-telegram-outbox", "telegram.outbox_sender.drain_outbox", "I", 1),
    Scheduled("prune-telegram-updates", "telegram.tasks.prune_old_updates", "H", None),
]
