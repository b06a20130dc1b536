"""The local provider against real processes (a stand-in worker that just waits)."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from workers.models import Worker
from workers.providers.base import ProviderError, SpawnRequest
from workers.providers.local import (
    WORKER_ENV_ALLOWLIST,
    LocalProvider,
    local_data_dir,
    process_alive,
)

STAND_IN = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.1)"]
IGNORES_TERM = [
    sys.executable,
    "-c",
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "while True: time.sleep(0.1)",
]


@pytest.fixture
def provider(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    settings.AGENT_FACTORY_LOCAL_DATA_ROOT = str(tmp_path / "workers")
    settings.AGENT_FACTORY_LOCAL_WORKER_COMMAND = STAND_IN
    settings.AGENT_FACTORY_LOCAL_TERM_GRACE_SECONDS = 1.0
    spawned = []
    yield LocalProvider(), spawned
    for worker in spawned:
        if process_alive(worker.process_id, worker.worker_id):
            os.killpg(worker.process_id, signal.SIGKILL)


def spawn(provider, spawned, worker_id="w-local"):
    local, _ = provider
    result = local.spawn(
        SpawnRequest(
            worker_id=worker_id,
            token="wk_x_y",
            api_url="http://x",
            conversation_id="c1",
            agent_key="alpha",
        )
    )
    worker = Worker.objects.create(
        worker_id=worker_id,
        provider="local",
        process_id=result.process_id,
        machine_id=result.machine_id,
    )
    spawned.append(worker)
    return worker


def assert_spawn_refused(reason: str) -> None:
    """The spawn fails with ``reason`` before any process is started."""
    from unittest import mock

    with (
        mock.patch("workers.providers.local.subprocess.Popen") as popen,
        pytest.raises(ProviderError, match=reason),
    ):
        LocalProvider().spawn(
            SpawnRequest(
                worker_id="w-x", token="t", api_url="http://x", conversation_id=None, agent_key=None
            )
        )
    popen.assert_not_called()


def wait_until(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_spawn_observe_and_stop(db, provider):
    local, spawned = provider
    worker = spawn(provider, spawned)
    assert worker.process_id and not local.is_gone(worker)
    with open(f"/proc/{worker.process_id}/environ", "rb") as handle:
        environ = handle.read().split(b"\0")
    assert b"AGENT_FACTORY_WORKER_TOKEN=wk_x_y" in environ
    assert b"AGENT_FACTORY_CONVERSATION_ID=c1" in environ
    local.teardown(worker)
    assert local.is_gone(worker)


def test_sigkill_after_grace_when_sigterm_is_ignored(db, provider, settings):
    settings.AGENT_FACTORY_LOCAL_WORKER_COMMAND = IGNORES_TERM
    local, spawned = provider
    worker = spawn(provider, spawned)
    time.sleep(0.3)  # let it install its handler
    started = time.monotonic()
    local.teardown(worker)
    assert local.is_gone(worker)
    assert time.monotonic() - started >= 1.0  # waited the grace period first


def test_killed_process_is_noticed(db, provider):
    local, spawned = provider
    worker = spawn(provider, spawned)
    os.killpg(worker.process_id, signal.SIGKILL)
    assert wait_until(lambda: local.is_gone(worker))


def test_pid_reused_by_another_process_counts_as_gone(db, provider):
    local, spawned = provider
    worker = spawn(provider, spawned)
    impostor = Worker(worker_id="someone-else", process_id=worker.process_id)
    assert local.is_gone(impostor)


def test_killed_worker_is_noticed_by_reconcile_and_its_lease_recovered(
    db, provider, alpha_agent, enqueue
):
    """A real local worker process holding a lease is killed: the next reconcile sees the
    process gone, requeues its job at once (an attempt counted, no waiting out the 6-minute
    lease) and takes the worker through to stopped with its token revoked."""
    from django.utils import timezone

    from agents.models import RuntimeConfig
    from workers.leases import claim_next_job
    from workers.reconcile import reconcile
    from workers.tokens import authenticate, mint_worker_token

    local, spawned = provider
    RuntimeConfig.get()
    # max_workers 1: the dead worker still counts while stopping, so no replacement spawns
    # here (spawning is covered above; this is about noticing and recovering).
    RuntimeConfig.objects.filter(pk=1).update(provider_kind="local", max_workers=1)
    message = enqueue("conv-1", "alpha")
    worker = spawn(provider, spawned)
    Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now())
    worker.refresh_from_db()
    token = mint_worker_token(worker)
    job = claim_next_job(worker)
    assert job is not None and job.message.pk == message.pk
    assert reconcile().drained == []  # alive: left alone

    os.killpg(worker.process_id, signal.SIGKILL)
    assert wait_until(lambda: local.is_gone(worker))
    report = reconcile()
    message.refresh_from_db()
    worker.refresh_from_db()
    assert report.drained == [worker.worker_id] and report.stopped == [worker.worker_id]
    assert report.swept["requeued"] == 1
    assert message.status == "queued" and message.attempts == 1 and message.claimed_by == ""
    assert worker.status == "stopped" and worker.status_reason == "machine gone"
    assert authenticate(token) is None


def test_default_command_is_manage_py_run_worker(db, settings, tmp_path):
    from pathlib import Path
    from unittest import mock

    settings.VAR_DIR = tmp_path / "var"
    settings.AGENT_FACTORY_LOCAL_WORKER_COMMAND = []
    fake = mock.Mock(pid=4242)
    with mock.patch("workers.providers.local.subprocess.Popen", return_value=fake) as popen:
        result = LocalProvider().spawn(
            SpawnRequest(
                worker_id="w-9",
                token="wk_t",
                api_url="http://x",
                conversation_id=None,
                agent_key=None,
            )
        )
    command = popen.call_args.args[0]
    assert command == [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "run_worker"]
    kwargs = popen.call_args.kwargs
    assert kwargs["start_new_session"] is True  # its own group: SIGTERM reaches children
    assert kwargs["env"]["AGENT_FACTORY_WORKER_ID"] == "w-9"
    assert kwargs["env"]["AGENT_FACTORY_WORKER_TOKEN"] == "wk_t"
    assert (result.process_id, result.machine_id) == (4242, "pid-4242")


def test_teardown_removes_the_data_dir(db, provider):
    local, spawned = provider
    worker = spawn(provider, spawned)
    data_dir = local_data_dir(worker.worker_id)
    data_dir.mkdir(parents=True)
    (data_dir / "workspace.txt").write_text("left behind")
    local.teardown(worker)
    assert local.is_gone(worker)
    assert not data_dir.exists()
    local.teardown(worker)  # already gone: still fine


def test_environment_is_the_allowlist_only(db, settings, tmp_path, monkeypatch):
    """Whatever the server's environment holds, a worker gets the allowlisted names only."""
    from unittest import mock

    settings.VAR_DIR = tmp_path / "var"
    for name in ("SECRET_KEY", "AGENT_FACTORY_ENCRYPTION_KEYS", "DATABASE_URL", "FLY_API_TOKEN"):
        monkeypatch.setenv(name, "server-only")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "config.settings")
    monkeypatch.setenv("AGENT_FACTORY_WORKER_HANDLER", "http")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("AGENT_FACTORY_CLAIM_WAIT_SECONDS", "5")  # the operator's long poll
    with mock.patch(
        "workers.providers.local.subprocess.Popen", return_value=mock.Mock(pid=4242)
    ) as popen:
        LocalProvider().spawn(
            SpawnRequest(
                worker_id="w-env",
                token="wk_t",
                api_url="http://x",
                conversation_id="c1",
                agent_key="alpha",
                env={"FLY_API_TOKEN": "x"},
            )
        )
    env = popen.call_args.kwargs["env"]
    assert set(env) <= WORKER_ENV_ALLOWLIST
    assert "server-only" not in env.values()
    assert env["AGENT_FACTORY_WORKER_HANDLER"] == "http" and env["LANG"] == "C.UTF-8"
    assert env["AGENT_FACTORY_CLAIM_WAIT_SECONDS"] == "5"
    assert env["TELEGRAM_API_BASE_URL"] == settings.TELEGRAM_API_BASE_URL
    assert env["AGENT_FACTORY_DATA_DIR"] == str(local_data_dir("w-env"))


@pytest.mark.parametrize("inside", ["var", "key"])
def test_data_root_next_to_the_database_or_key_is_refused(db, settings, tmp_path, inside):
    settings.VAR_DIR = tmp_path / "var"
    settings.AGENT_FACTORY_DEV_KEY_FILE = tmp_path / "keys" / "dev-encryption.key"
    root = tmp_path / ("var" if inside == "var" else "keys") / "workers"
    settings.AGENT_FACTORY_LOCAL_DATA_ROOT = str(root)
    assert_spawn_refused("next to the server's database or key file")
    assert not root.exists()


def test_a_planted_symlink_as_data_root_is_refused(db, settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "workers").symlink_to(tmp_path / "elsewhere")
    settings.AGENT_FACTORY_LOCAL_DATA_ROOT = str(tmp_path / "workers")
    assert_spawn_refused("symlink or belongs to another user")
