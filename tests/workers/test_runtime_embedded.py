"""The main job's shutdown: schedules first, then the local workers (while the web server
still serves their final snapshot), the web server last; stubborn workers are killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workers.management.commands import run_embedded
from workers.models import Worker
from workers.providers.local import local_data_dir, process_alive


class FakeChild:
    def __init__(self, name, events, pid=None):
        self.name, self.events, self.returncode, self.pid = name, events, None, pid

    def poll(self):
        return self.returncode

    def send_signal(self, signum):
        self.events.append(f"{self.name}:{signal.Signals(signum).name}")
        self.returncode = -signum

    def wait(self, timeout=None):
        return self.returncode

    def kill(self):
        self.events.append(f"{self.name}:KILL")


def test_shutdown_stops_schedules_then_workers_then_the_web_server(monkeypatch):
    events: list[str] = []
    monkeypatch.setattr(run_embedded, "stop_local_workers", lambda: events.append("workers") or 1)
    children = [FakeChild("web", events, pid=-4242), FakeChild("qcluster", events)]

    def killpg(pgid, signum):  # the web server is signalled as a process group
        assert pgid == -4242  # (a fake id: nothing real is ever signalled here)
        if signum == signal.SIGTERM:
            children[0].send_signal(signum)

    monkeypatch.setattr(run_embedded.os, "killpg", killpg)
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    command = run_embedded.Command()
    command._dev = True  # runserver: the web server's whole group is signalled
    try:
        command._install_stop_handlers()
        threading.Timer(0.3, os.kill, args=(os.getpid(), signal.SIGTERM)).start()
        command._supervise(children)  # returns once the (Ctrl+C-like) SIGTERM arrived
        command._stop_children(children)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    # The second pass catches a worker the cluster spawned while it was stopping.
    assert events == ["qcluster:SIGTERM", "workers", "workers", "web:SIGTERM"]


# Each prints "ready" once its SIGTERM disposition is in place.
POLITE = (
    "import os, signal, sys, time\n"
    "def bye(*a):\n"
    "    open(os.environ['MARKER'], 'w').write('snapshot taken')\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)"
)
STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)"
)


def start(worker_id, code, marker):
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "AGENT_FACTORY_WORKER_ID": worker_id, "MARKER": str(marker)},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout.readline() == b"ready\n"
    return process


@pytest.mark.django_db
def test_stop_local_workers_waits_for_them_and_kills_the_stubborn(tmp_path, settings):
    settings.AGENT_FACTORY_LOCAL_DATA_ROOT = str(tmp_path / "workers")
    marker = tmp_path / "polite-exit"
    polite = start("w-polite", POLITE, marker)
    stubborn = start("w-stubborn", STUBBORN, tmp_path / "unused")
    try:
        data_dirs = []
        for worker_id, process in (("w-polite", polite), ("w-stubborn", stubborn)):
            Worker.objects.create(worker_id=worker_id, provider="local", process_id=process.pid)
            data_dirs.append(local_data_dir(worker_id))
            data_dirs[-1].mkdir(parents=True)
        Worker.objects.create(worker_id="w-gone", provider="local", process_id=None)
        started = time.monotonic()
        assert run_embedded.stop_local_workers(grace_seconds=1.0) == 2
        elapsed = time.monotonic() - started
        # The polite one handled SIGTERM itself (a worker snapshots there) and was waited for.
        assert marker.read_text() == "snapshot taken"
        assert not data_dirs[0].exists() and not data_dirs[1].exists()  # removed once gone
        assert stubborn.wait(timeout=5) == -signal.SIGKILL  # killed after the grace period
        assert 0.9 <= elapsed < 5
        assert not process_alive(polite.pid, "w-polite")
    finally:
        for process in (polite, stubborn):
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()


def test_children_are_in_their_own_session_and_die_with_the_main_job(tmp_path):
    pid_file = tmp_path / "child.pid"
    # A stand-in main job: starts a long-running child the way run_embedded does, then waits.
    parent_code = (
        "import sys, time\n"
        "from workers.management.commands.run_embedded import start_child\n"
        "child = start_child([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    parent = subprocess.Popen([sys.executable, "-c", parent_code], env=env, cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child_pid = int(pid_file.read_text())
        assert os.getsid(child_pid) == child_pid  # own session: Ctrl+C does not reach it
        assert os.getsid(child_pid) != os.getsid(parent.pid)
        parent.kill()  # SIGKILL: no chance to clean up
        parent.wait(timeout=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(child_pid, 0)
            except ProcessLookupError:
                break
            try:
                stat = Path(f"/proc/{child_pid}/stat").read_text()
            except FileNotFoundError:
                break
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                break  # dead, waiting for init to reap it
            time.sleep(0.05)
        else:
            os.kill(child_pid, signal.SIGKILL)
            pytest.fail("the child outlived its SIGKILLed parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
