"""The local provider against real processes (a stand-in worker that just waits)."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from workers.models import Worker
from workers.providers.base import SpawnRequest
from workers.providers.local import LocalProvider, process_alive

STAND_IN = [sys.executable, "-c", "import time\nwhile True: time.sleep(0.1)"]
IGNORES_TERM = [
    sys.executable,
    "-c",
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "while True: time.sleep(0.1)",
]


@pytest.fixture
def provider(settings, tmp_path):
    settings.VAR_DIR = tmp_path
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
