"""Fire-and-forget triggers run after commit (django-q2)."""

from __future__ import annotations

import logging

from django.core.cache import cache

logger = logging.getLogger(__name__)

# A burst of enqueues asks for one reconcile: the flag lives until the task starts running
# (it clears it first), or expires, so a lost task never blocks triggers for long.
COALESCE_SECONDS = 10


def request_reconcile() -> None:
    """Ask for a reconcile pass soon. Coalesced: many enqueues in a burst cause one pass."""
    from django_q.tasks import async_task

    from workers.reconcile import TRIGGER_CACHE_KEY

    if not cache.add(TRIGGER_CACHE_KEY, 1, timeout=COALESCE_SECONDS):
        return
    try:
        async_task("workers.reconcile.run_reconcile_task", task_name="reconcile-trigger")
    except Exception:  # the broker being down must never fail an enqueue that committed
        cache.delete(TRIGGER_CACHE_KEY)
        logger.exception("Could not queue a reconcile trigger; the schedule will catch up.")
