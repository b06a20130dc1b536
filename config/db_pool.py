"""PostgreSQL connection pooling (SPEC §18): Django's native psycopg pool, bounded per
process, with ``CONN_MAX_AGE=0`` (every request hands its connection back to the pool).

Pools must not cross a fork: a child that used a connection inherited from its parent
would share the parent's socket. The django-q2 cluster forks its workers, so after a fork
the child forgets the pools it inherited and opens its own on first use. The inherited pool
objects are kept referenced (never closed, never collected): closing or finalising them in
the child would end the parent's connections.
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

_inherited: list = []


def pool_options(min_size: int, max_size: int, timeout: float) -> dict:
    if min_size < 0 or max_size < 1 or min_size > max_size:
        raise ImproperlyConfigured(
            "DATABASE_POOL_MIN_SIZE must be >= 0 and DATABASE_POOL_MAX_SIZE >= 1 and >= it "
            f"(got {min_size} and {max_size})."
        )
    if timeout <= 0:
        raise ImproperlyConfigured(f"DATABASE_POOL_TIMEOUT must be positive (got {timeout}).")
    return {"min_size": min_size, "max_size": max_size, "timeout": timeout}


def prepare_threshold(raw: str) -> int | None:
    """``DATABASE_PREPARE_THRESHOLD``: after how many runs on one connection a server-bound
    statement is prepared (psycopg's ``prepare_threshold``); empty: never."""
    if raw.strip() == "":
        return None
    if not raw.strip().isdigit():
        raise ImproperlyConfigured(
            f"DATABASE_PREPARE_THRESHOLD must be a whole number >= 0 or empty (got {raw!r})."
        )
    return int(raw)


def _forget_pools_in_child() -> None:
    from django.db import connections
    from django.db.backends.postgresql.base import DatabaseWrapper

    pools = DatabaseWrapper._connection_pools
    if pools:
        _inherited.append(dict(pools))
        pools.clear()
    for conn in connections.all(initialized_only=True):
        if conn.vendor == "postgresql" and conn.connection is not None:
            # A connection checked out at fork time belongs to the parent: keep it alive
            # here (unused) and start afresh.
            _inherited.append(conn.connection)
            conn.connection = None


def register_fork_safety() -> None:
    if not getattr(register_fork_safety, "done", False):
        os.register_at_fork(after_in_child=_forget_pools_in_child)
        register_fork_safety.done = True
