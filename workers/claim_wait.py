"""Long-poll claims (SPEC §7, revision 2): ``POST claim`` with ``wait_seconds`` holds the
request until a job is ready for the worker or the time is up, so an idle worker picks up a
new message at once instead of at its next poll.

Waking: a new message, once committed, wakes the waiters (``workers.queue`` asks it of every
enqueue, raw-SQL fast paths included). On PostgreSQL through
``LISTEN``/``NOTIFY`` (any server process); on SQLite through a condition in this process
(the development server is one process). Either way the waiter claims again at least every
``RECHECK`` seconds, which also covers retries whose time has come and wake-ups that were
missed; it stops at once when the worker is no longer active (drained, stopped).

Each waiting claim holds a server thread (and, on PostgreSQL, its database connection) for
up to ``MAX_WAIT`` seconds: size the server's threads for the idle workers (README).
"""

from __future__ import annotations

import threading
import time

from django.db import connection

from workers.claim import claim_next_job
from workers.models import Worker

MAX_WAIT = 25.0
RECHECK = 1.0
CHANNEL = "agent_factory_new_work"
_local = threading.Condition()


def notify_new_work() -> None:
    """Wake the waiting claims (call after commit)."""
    with _local:
        _local.notify_all()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])


def _keep_waiting(worker: Worker, conversation_id: str | None) -> bool:
    """Still active, and not moved to another conversation than the one it asks for (fair
    share: it must hear of the move from ``control`` now, not after the wait)."""
    row = (
        Worker.objects.filter(pk=worker.pk, status=Worker.ACTIVE)
        .values_list("assigned_conversation__conversation_id", flat=True)
        .first()
    )
    if row is None and not Worker.objects.filter(pk=worker.pk, status=Worker.ACTIVE).exists():
        return False
    return conversation_id is None or row is None or row == conversation_id


def _wait(seconds: float, listening: bool) -> None:
    if seconds <= 0:
        return
    if listening:
        # psycopg 3: block until a NOTIFY arrives or the time is up.
        for _ in connection.connection.notifies(timeout=seconds, stop_after=1):
            pass
        return
    with _local:
        _local.wait(seconds)


def claim_waiting(
    worker: Worker, *, conversation_id: str | None, wait_seconds: float, clock=time.monotonic
):
    """``claim_next_job``, repeated until a job comes or ``wait_seconds`` (≤ 25) pass."""
    deadline = clock() + min(max(wait_seconds, 0.0), MAX_WAIT)
    listening = False
    try:
        while True:
            try:
                job = claim_next_job(worker, conversation_id=conversation_id)
            except Worker.DoesNotExist:
                # Its row was deleted while it waited (an operator, a test's flush): no job;
                # its next request fails authentication.
                return None
            remaining = deadline - clock()
            if job is not None or remaining <= 0 or not _keep_waiting(worker, conversation_id):
                return job
            if (
                not listening
                and connection.vendor == "postgresql"
                and not connection.in_atomic_block
            ):
                with connection.cursor() as cursor:
                    cursor.execute(f"LISTEN {CHANNEL}")
                listening = True
                continue  # claim once more: work that came before LISTEN sent no wake-up
            _wait(min(RECHECK, remaining), listening)
    finally:
        if listening:
            with connection.cursor() as cursor:
                cursor.execute(f"UNLISTEN {CHANNEL}")
