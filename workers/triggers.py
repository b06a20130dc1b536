"""Fire-and-forget triggers run after commit (django-q2)."""

from __future__ import annotations

import logging
import time

from django.core.cache import cache

logger = logging.getLogger(__name__)

TRIGGER_CACHE_KEY = "agent-factory:reconcile-trigger"
# The enqueue trigger is throttled per process for this long; the pass it queued runs once
# more at the end of that window (``reconcile.run_reconcile_task``), so an enqueue that the
# throttle swallowed is still seen.
TRIGGER_WINDOW_SECONDS = 2.0


def request_reconcile() -> None:
    """Ask for a reconcile pass soon. Coalesced: a burst of enqueues queues one task.

    The throttle flag lives in this process's cache for the trigger window. Whoever finds it
    set queues nothing, which is safe because the queued task runs a second pass once the
    window has closed (see ``run_reconcile_task``): every enqueue that was swallowed here
    committed before that second pass started. Nothing needs to clear the flag from the
    task's process, so this works with a per-process cache too.
    """
    from django_q.conf import Conf
    from django_q.tasks import async_task

    opened = time.time()
    if not cache.add(TRIGGER_CACHE_KEY, opened, timeout=TRIGGER_WINDOW_SECONDS):
        return
    try:
        async_task("workers.reconcile.run_reconcile_task", opened, task_name="reconcile-trigger")
        if Conf.SYNC:  # the pass already ran inline: nothing is pending
            cache.delete(TRIGGER_CACHE_KEY)
    except Exception:  # the broker being down must never fail an enqueue that committed
        cache.delete(TRIGGER_CACHE_KEY)
        logger.exception("Could not queue a reconcile trigger; the schedule will catch up.")
