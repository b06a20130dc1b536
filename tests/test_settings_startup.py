"""Start-up refuses dangerous configuration with one clear line (run in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEY = "dGVzdC1rZXktMzItYnl0ZXMtbG9uZy0wMTIzNDU2Nzg="


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "SECRET_KEY", "AGENT_FACTORY_", "DEBUG"))
    }
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({"AGENT_FACTORY_ENCRYPTION_KEYS": KEY}, "SECRET_KEY is not set"),
        ({"SECRET_KEY": "x" * 50}, "AGENT_FACTORY_ENCRYPTION_KEYS is not set"),
    ],
)
def test_debug_off_refuses_missing_keys(env, message, tmp_path):
    result = manage("check", DEBUG="0", AGENT_FACTORY_VAR_DIR=str(tmp_path), **env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "dev-encryption.key").exists()


@pytest.mark.parametrize("command", [["runserver", "--noreload"], ["qcluster"], ["migrate"]])
def test_servers_refuse_to_start_without_keys(command, tmp_path):
    result = manage(*command, DEBUG="0", SECRET_KEY="x" * 50, AGENT_FACTORY_VAR_DIR=str(tmp_path))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "AGENT_FACTORY_ENCRYPTION_KEYS is not set" in lines[0]
    assert not (tmp_path / "agent_factory.sqlite3").exists()  # nothing was touched


def test_bad_key_is_a_system_check_error(tmp_path):
    result = manage(
        "check",
        DEBUG="0",
        SECRET_KEY="x" * 50,
        AGENT_FACTORY_ENCRYPTION_KEYS="c2hvcnQ=",
        AGENT_FACTORY_VAR_DIR=str(tmp_path),
    )
    assert result.returncode != 0
    assert "agents.E001" in result.stderr and "AES-256 needs exactly 32" in result.stderr


def test_debug_on_starts_with_a_generated_dev_key(tmp_path):
    result = manage("check", "--deploy", DEBUG="1", AGENT_FACTORY_VAR_DIR=str(tmp_path))
    assert "agents.W001" in result.stderr + result.stdout
    result = manage(
        "shell",
        "-c",
        "from agents.secret_store import get_key_ring; get_key_ring()",
        DEBUG="1",
        AGENT_FACTORY_VAR_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    key_file = tmp_path / "dev-encryption.key"
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"


SHOW = (
    "import json; from django.conf import settings as s; d = s.DATABASES['default']; "
    "print(json.dumps({'engine': d['ENGINE'], 'name': str(d['NAME']), 'host': d.get('HOST'), "
    "'q': {k: s.Q_CLUSTER.get(k) for k in ('orm', 'redis', 'sync')}, 'debug': s.DEBUG, "
    "'provider': s.WORKER_PROVIDER}))"
)


def show_settings(**env: str) -> dict:
    import json

    result = manage("shell", "-c", SHOW, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_embedded_default_sqlite_under_var_and_orm_broker(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("WORKER_PROVIDER", raising=False)  # the suite's own default is none
    data = show_settings(DEBUG="1", AGENT_FACTORY_VAR_DIR=str(tmp_path / "var"))
    assert data["engine"] == "django.db.backends.sqlite3"
    assert data["name"] == str(tmp_path / "var" / "agent_factory.sqlite3")
    assert (tmp_path / "var").is_dir()  # created on start, a fresh clone has none
    assert data["q"] == {"orm": "default", "redis": None, "sync": None}
    assert data["provider"] == "local"


def test_postgres_and_redis_from_the_environment(tmp_path):
    data = show_settings(
        DEBUG="0",
        SECRET_KEY="x" * 50,
        AGENT_FACTORY_ENCRYPTION_KEYS=KEY,
        AGENT_FACTORY_VAR_DIR=str(tmp_path),
        DATABASE_URL="postgres://af:pw@db.example:5432/factory",
        REDIS_URL="redis://cache.example:6379/1",
        WORKER_PROVIDER="none",
    )
    assert data["engine"] == "django.db.backends.postgresql"
    assert (data["name"], data["host"]) == ("factory", "db.example")
    assert data["q"] == {"orm": None, "redis": "redis://cache.example:6379/1", "sync": None}
    assert data["debug"] is False and data["provider"] == "none"


def test_unknown_worker_provider_refused_in_one_line(tmp_path):
    result = manage("check", DEBUG="1", WORKER_PROVIDER="k8s", AGENT_FACTORY_VAR_DIR=str(tmp_path))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "WORKER_PROVIDER must be one of local, fly, none" in lines[0]


def test_both_keys_missing_names_the_first_and_documented_in_readme(tmp_path):
    result = manage("check", DEBUG="0", AGENT_FACTORY_VAR_DIR=str(tmp_path))
    assert result.returncode == 2 and "SECRET_KEY is not set" in result.stderr
    readme = (ROOT / "README.md").read_text()
    # The README's configuration section says DEBUG off needs these two.
    assert "`SECRET_KEY`" in readme and "`AGENT_FACTORY_ENCRYPTION_KEYS`" in readme


def test_test_settings_run_django_q2_tasks_synchronously(db, settings):
    from django_q.models import Task
    from django_q.tasks import async_task, result

    assert settings.Q_CLUSTER["sync"] is True and settings.Q_CLUSTER["orm"] == "default"
    task_id = async_task("math.floor", 2.5)
    assert result(task_id) == 2  # already run, inline, before async_task returned
    assert Task.objects.get(id=task_id).success


def test_console_log_follows_the_current_stderr(monkeypatch):
    """A test runner swaps sys.stderr and closes its capture; the console handler must not
    keep writing to a closed stream (it would print '--- Logging error ---' ever after)."""
    import io
    import logging
    import sys

    from config.logging_filters import CurrentStderrHandler

    root_handlers = logging.getLogger().handlers
    assert any(isinstance(h, CurrentStderrHandler) for h in root_handlers)
    handler = CurrentStderrHandler()
    for _ in range(2):
        stream = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        handler.emit(logging.LogRecord("t", logging.WARNING, __file__, 1, "seen", None, None))
        assert stream.getvalue() == "seen\n"
