"""/healthz answers without the database; /readyz names what keeps the process from serving."""

from __future__ import annotations

import socket

import pytest
from django.db import connection, connections
from django.db.migrations.recorder import MigrationRecorder

from ops import health


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unreachable_database(django_db_setup, django_db_blocker):
    """A second database alias: PostgreSQL on a closed port. The shared server (and the
    default alias the other tests use) is left alone. Outside a test transaction (Django's
    test case would refuse the extra alias itself), the default alias on the test database:
    the probe only reads."""
    alias = "unreachable"
    connections.settings[alias] = connections.configure_settings(
        {
            "default": connections.settings["default"],
            alias: {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": "127.0.0.1",
                "PORT": str(closed_port()),
                "NAME": "nothing",
                "USER": "nobody",
                "OPTIONS": {"connect_timeout": 2},
            },
        }
    )[alias]
    with django_db_blocker.unblock():
        yield alias
        connections[alias].close()
    del connections[alias]
    del connections.settings[alias]


def test_healthz_answers_without_touching_the_database(client, db, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"].startswith("max-age=0")


def test_healthz_needs_no_database_at_all(client):
    """No ``db`` fixture: pytest-django refuses any query, so one would fail the probe."""
    assert client.get("/healthz/").status_code == 200


def test_readyz_ok(client, db):
    response = client.get("/readyz/")
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "status": "ok",
        "failing": [],
        "checks": {"database": "ok", "broker": "ok", "migrations": "ok"},
    }


def test_readyz_names_the_database_when_postgresql_is_unreachable(client, unreachable_database):
    response = client.get("/readyz/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["database"]
    assert body["checks"]["database"] == "unreachable: unavailable (OperationalError)"
    assert body["checks"]["migrations"] == "ok"  # read from the default database, which is up


def test_readyz_names_migrations_when_one_is_unapplied(client, db):
    MigrationRecorder(connection).migration_qs.filter(app="workers", name="0001_initial").delete()
    response = client.get("/readyz/")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["migrations"]
    assert body["checks"]["migrations"] == "1 unapplied: workers.0001_initial"


def test_readyz_names_the_broker_when_redis_is_unreachable(client, db, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "redis": f"redis://127.0.0.1:{closed_port()}/0"}
    response = client.get("/readyz/")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"].startswith("unavailable (")


def test_with_the_database_down_the_orm_broker_is_down_too_and_migrations_unknown(monkeypatch, db):
    monkeypatch.setattr(
        health, "check_databases", lambda: {"default": "unavailable (OperationalError)"}
    )
    report = health.readiness()
    assert report["failing"] == ["database", "broker"]
    assert report["checks"]["migrations"] == health.UNKNOWN


def test_probes_refuse_other_methods(client, db):
    assert client.post("/healthz/").status_code == 405
    assert client.post("/readyz/").status_code == 405
