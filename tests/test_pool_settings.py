"""PostgreSQL settings (SPEC §18): Django's psycopg pool sized from the environment,
CONN_MAX_AGE 0; bad sizes are refused in one line (run in a subprocess, no database)."""

from __future__ import annotations

import json

from tests.test_settings_startup import KEY, manage

SHOW = (
    "import json; from django.conf import settings as s; d = s.DATABASES['default']; "
    "print(json.dumps({'pool': d['OPTIONS'].get('pool'), 'age': d['CONN_MAX_AGE'], "
    "'checks': d['CONN_HEALTH_CHECKS'], 'prepare': d['OPTIONS'].get('prepare_threshold')}))"
)
BASE = {
    "DEBUG": "0",
    "SECRET_KEY": "x" * 50,
    "AGENT_FACTORY_ENCRYPTION_KEYS": KEY,
    "DATABASE_URL": "postgres://af:pw@db.example:5432/factory",
    "WORKER_PROVIDER": "none",
}


def show(tmp_path, **env):
    result = manage("shell", "-c", SHOW, AGENT_FACTORY_VAR_DIR=str(tmp_path), **BASE, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_pool_defaults_and_no_persistent_connections(tmp_path, monkeypatch):
    for name in (
        "DATABASE_POOL_MIN_SIZE",
        "DATABASE_POOL_MAX_SIZE",
        "DATABASE_POOL_TIMEOUT",
        "DATABASE_PREPARE_THRESHOLD",
    ):
        monkeypatch.delenv(name, raising=False)
    assert show(tmp_path) == {
        "pool": {"min_size": 2, "max_size": 10, "timeout": 10.0},
        "age": 0,
        "checks": True,
        "prepare": 5,
    }


def test_pool_sizes_from_the_environment(tmp_path):
    data = show(
        tmp_path, DATABASE_POOL_MIN_SIZE="1", DATABASE_POOL_MAX_SIZE="4", DATABASE_POOL_TIMEOUT="3"
    )
    assert data["pool"] == {"min_size": 1, "max_size": 4, "timeout": 3.0}


def test_bad_pool_sizes_are_refused_in_one_line(tmp_path):
    result = manage(
        "check",
        AGENT_FACTORY_VAR_DIR=str(tmp_path),
        DATABASE_POOL_MIN_SIZE="5",
        DATABASE_POOL_MAX_SIZE="2",
        **BASE,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "DATABASE_POOL_MIN_SIZE" in lines[0], result.stderr


def test_the_prepare_threshold_comes_from_the_environment_and_empty_turns_it_off(tmp_path):
    assert show(tmp_path, DATABASE_PREPARE_THRESHOLD="2")["prepare"] == 2
    assert show(tmp_path, DATABASE_PREPARE_THRESHOLD="")["prepare"] is None


def test_a_bad_prepare_threshold_is_refused_in_one_line(tmp_path):
    result = manage(
        "check", AGENT_FACTORY_VAR_DIR=str(tmp_path), DATABASE_PREPARE_THRESHOLD="-1", **BASE
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "DATABASE_PREPARE_THRESHOLD" in lines[0], result.stderr
