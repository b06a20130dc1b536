"""Probes for load balancers and orchestrators (SPEC §24).

``/healthz``: the process answers (no database, so a database outage does not get every web
process restarted). ``/readyz``: the process can serve — every configured database answers,
the django-q2 broker answers, and every migration on disk is applied; otherwise 503 with the
failing parts named. Error details stay out of the body (it is unauthenticated): only the
exception's type."""

from __future__ import annotations

import functools

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

OK = "ok"
UNKNOWN = "unknown (database unavailable)"
BROKER_TIMEOUT_SECONDS = 2.0


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": OK})


def _failure(exc: BaseException) -> str:
    return f"unavailable ({type(exc).__name__})"


def check_databases() -> dict[str, str]:
    """Each configured database alias: one trivial query."""
    results = {}
    for alias in connections:
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            results[alias] = OK
        except Exception as exc:
            results[alias] = _failure(exc)
    return results


def check_broker(databases: dict[str, str]) -> str:
    """The django-q2 broker: Redis when configured (a PING), otherwise a database table."""
    redis_url = settings.Q_CLUSTER.get("redis")
    if not redis_url:
        orm_alias = settings.Q_CLUSTER.get("orm", DEFAULT_DB_ALIAS)
        return databases.get(orm_alias, OK)  # the ORM broker is as up as its database
    import redis

    try:
        client = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=BROKER_TIMEOUT_SECONDS,
            socket_timeout=BROKER_TIMEOUT_SECONDS,
        )
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return _failure(exc)
    return OK


@functools.cache
def expected_migrations() -> frozenset[tuple[str, str]]:
    """Every migration on disk. The code of a running process does not change, so the graph
    is read once per process; what is applied is asked each time."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return frozenset(loader.graph.nodes)


def check_migrations() -> str:
    try:
        recorder = MigrationRecorder(connections[DEFAULT_DB_ALIAS])
        applied = set(recorder.migration_qs.values_list("app", "name"))
    except Exception as exc:
        return _failure(exc)
    missing = sorted(expected_migrations() - applied)
    if missing:
        shown = ", ".join(f"{app}.{name}" for app, name in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        return f"{len(missing)} unapplied: {shown}{more}"
    return OK


def readiness() -> dict:
    databases = check_databases()
    checks = {"database": OK}
    failing_aliases = [alias for alias, state in databases.items() if state != OK]
    if failing_aliases:
        checks["database"] = "; ".join(f"{a}: {databases[a]}" for a in failing_aliases)
    checks["broker"] = check_broker(databases)
    # Migrations are read from the default database: not known while it is down (and not
    # reported as a second failure: the database is the one to fix).
    if databases.get(DEFAULT_DB_ALIAS) == OK:
        checks["migrations"] = check_migrations()
    else:
        checks["migrations"] = UNKNOWN
    failing = [name for name, state in checks.items() if state not in (OK, UNKNOWN)]
    return {"status": "unavailable" if failing else OK, "failing": failing, "checks": checks}


@never_cache
@require_GET
def readyz(request):
    report = readiness()
    return JsonResponse(report, status=503 if report["failing"] else 200)
