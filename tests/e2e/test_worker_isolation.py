"""No server secret reaches a worker (SPEC §23): a real local worker, spawned by reconcile
from a server whose environment holds every secret, sees only allowlisted names, runs on
settings that hold none of the server's, and cannot list the database or the key file from
its data dir's parents."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from django.conf import settings

from tests.e2e.test_end_to_end import onboard, post_update, replies, system, wait_for  # noqa: F401
from workers.models import Worker
from workers.providers.local import WORKER_ENV_ALLOWLIST, local_data_dir

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SERVER_SECRETS = {
    "SECRET_KEY": "server-secret-key-" + "s" * 40,
    "AGENT_FACTORY_ENCRYPTION_KEYS": "c2VydmVyLWtleS0zMi1ieXRlcy1sb25nLTAxMjM0NTY=",
    "DATABASE_URL": "postgres://factory:db-password@127.0.0.1:5432/factory",
    "FLY_API_TOKEN": "fly-token-server-only",
    "METRICS_TOKEN": "metrics-token-server-only",
    "REDIS_URL": "redis://:redis-password@127.0.0.1:6379/0",
}


@pytest.fixture
def isolated(system, settings, monkeypatch):  # noqa: F811 (the imported fixture)
    """The embedded layout (SQLite file and dev key in var/), the default data root (the
    system temp dir), every server secret in the server's environment."""
    var = Path(settings.VAR_DIR)
    var.mkdir(parents=True, exist_ok=True)
    database = var / "agent_factory.sqlite3"
    key_file = var / "dev-encryption.key"
    database.write_bytes(b"SQLite format 3\0")
    key_file.write_text("dev key\n")
    settings.AGENT_FACTORY_DEV_KEY_FILE = key_file
    settings.AGENT_FACTORY_LOCAL_DATA_ROOT = ""  # the default
    for name, value in SERVER_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AGENT_FACTORY_WORKER_HANDLER", "tests.e2e.handlers.dump_surroundings")
    monkeypatch.setenv("OPENCLAW_SERVICE_KEY", "bridge-key-not-for-the-environment")
    yield system, database, key_file
    for worker in Worker.objects.all():  # the system fixture kills them: no teardown ran
        shutil.rmtree(local_data_dir(worker.worker_id), ignore_errors=True)


def test_local_worker_sees_no_server_secret(isolated):
    server, database, key_file = isolated
    bot = onboard("alpha", "100:alpha-sandbox-token")
    post_update(server, bot, 1, "what do you see?", user=31)
    wait_for(lambda: replies("100", 31), what="the handler's reply")
    assert replies("100", 31) == ["dumped"]
    worker = Worker.objects.get()
    data_dir = local_data_dir(worker.worker_id)
    dump = json.loads((data_dir / "surroundings.json").read_text())

    # Exactly allowlisted names, none of the server's secrets (names or values).
    assert set(dump["initial_environ"]) <= WORKER_ENV_ALLOWLIST, dump["initial_environ"]
    assert set(dump["environ"]) - WORKER_ENV_ALLOWLIST == {"DJANGO_SETTINGS_MODULE"}
    assert dump["settings_module"] == "config.worker_settings"
    flat = json.dumps(dump)
    for name, value in SERVER_SECRETS.items():
        assert name not in dump["environ"]
        assert value not in flat, name
    assert "OPENCLAW_SERVICE_KEY" not in dump["environ"]
    # Its settings hold nothing of the server's (no .env or var/ read either).
    assert dump["secret_key"] != settings.SECRET_KEY
    assert {db["ENGINE"] for db in dump["databases"].values()} == {"django.db.backends.dummy"}
    assert not dump["has_encryption_keys"] and not dump["has_fly_token"]

    # The data dir is under the system temp dir, not var/; neither the database nor the key
    # file is in any of its parents or anywhere under the data root.
    for directory, entries in dump["parents"].items():
        for protected in (database, key_file):
            if Path(directory) == protected.parent:
                assert protected.name not in entries, directory
    assert data_dir.parent == Path(tempfile.gettempdir()) / "agent-factory-workers"
    reachable = set(dump["under_data_root"])
    assert str(database) not in reachable and str(key_file) not in reachable
    assert not any(entry.endswith((".sqlite3", ".key")) for entry in reachable)
