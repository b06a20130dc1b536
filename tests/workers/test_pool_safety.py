"""Code that relied on persistent connections stays correct with the psycopg pool (SPEC §18):
a session advisory lock never goes back to the pool still held, and a forked child (the
django-q2 cluster forks its workers) never reuses its parent's pooled connections."""

from __future__ import annotations

import os

import psycopg
import pytest
from django.db import DatabaseError, connection
from django.db.backends.utils import CursorWrapper

from workers.reconcile import reconcile_lock
from workers.reconcile_lock import ADVISORY_LOCK_KEY

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def other_session_can_lock() -> bool:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as other:
        got = other.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY]).fetchone()[0]
        if got:
            other.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])
        return got


def test_a_failed_unlock_does_not_return_the_lock_to_the_pool(monkeypatch):
    assert connection.settings_dict["OPTIONS"].get("pool")
    real_execute = CursorWrapper.execute

    def execute(self, sql, params=None):
        if "pg_advisory_unlock" in sql:
            raise DatabaseError("connection trouble")
        return real_execute(self, sql, params)

    with reconcile_lock() as held:
        assert held and not other_session_can_lock()
        monkeypatch.setattr(CursorWrapper, "execute", execute)
    monkeypatch.undo()
    connection.close()  # the end of the pass: the connection goes back to the pool
    assert other_session_can_lock()
    with reconcile_lock() as held:  # and the next pass gets it
        assert held


def test_forked_child_opens_its_own_pool():
    from django.db.backends.postgresql.base import DatabaseWrapper

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        parent_pid = cursor.fetchone()[0]
    assert DatabaseWrapper._connection_pools
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            if not DatabaseWrapper._connection_pools and connection.connection is None:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    code = 0 if cursor.fetchone()[0] != parent_pid else 3
            else:
                code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with connection.cursor() as cursor:  # the parent's connection is intact
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] == parent_pid
