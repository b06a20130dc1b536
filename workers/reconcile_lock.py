"""The single-reconcile lock (SPEC §10) and the pass trace used to prove it.

On PostgreSQL a session advisory lock; elsewhere (SQLite, one machine) an exclusive file
lock next to the database. Neither is a query fast path: they guard a whole reconcile pass,
provider calls included.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 0x4146_5243  # "AFRC": agent factory reconcile


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
    import fcntl  # POSIX only, and needed only off PostgreSQL

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


@contextlib.contextmanager
def traced_pass():
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
