"""The README's first command, run from a fresh clone, serves the admin (then stops)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_in(directory: Path) -> list[str]:
    """Command lines of the live processes whose working directory is ``directory``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if Path(os.readlink(proc / "cwd")) == directory:
                stat = (proc / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def test_readme_first_command_serves_admin(tmp_path):
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/run.sh" in readme.split("\n## ")[0]
    clone = tmp_path / "clone"
    # A fresh copy of the project's files as git sees them (tracked and new, not ignored):
    # no var/, no database, no dev key, exactly as after a clone.
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=60,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = clone / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    # Reuse this checkout's installed environment: the install step itself is exercised by
    # .ci/run on a fresh machine; here it would only repeat a two-minute download.
    (clone / ".venv").symlink_to(ROOT / ".venv")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            (
                "DJANGO_",
                "DATABASE_URL",
                "SECRET_KEY",
                "AGENT_FACTORY_",
                "TELEGRAM_",
                "PUBLIC_BASE_URL",
                "DEBUG",
                "WORKER_PROVIDER",  # the suite's own "none"; a newcomer gets local workers
            )
        )
    }
    env["PORT"] = str(port)
    log = open(tmp_path / "main.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def banner() -> bytes:
        return (tmp_path / "main.log").read_bytes()

    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/admin/login/", timeout=2
                ) as response:
                    status = response.status
                    break
            except OSError:
                time.sleep(0.5)
        assert status == 200, (tmp_path / "main.log").read_text()[-3000:]
        # Served by gunicorn as in production (SPEC §24), the admin's CSS included.
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/static/admin/css/base.css", timeout=5
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/css")
            assert response.headers["Server"].startswith("gunicorn")
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and b"demo admin: admin /" not in (tmp_path / "main.log").read_bytes()
        ):
            time.sleep(0.3)
        assert b"demo admin: admin /" in (tmp_path / "main.log").read_bytes()
        # The django-q2 cluster (schedules, triggers) runs beside the web server.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not re.search(
            rb"Q Cluster \S+ .*running", (tmp_path / "main.log").read_bytes()
        ):
            time.sleep(0.3)
        assert re.search(rb"Q Cluster \S+ .*running", (tmp_path / "main.log").read_bytes())
        # The first thing printed to try: the admin's sandbox chat (staff only: the login).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and b"simulate_update demo" not in banner():
            time.sleep(0.3)
        chat = re.search(rb"^ +(http://\S+/admin/telegram/sandboxmessage/chat/)$", banner(), re.M)
        assert chat, banner().decode()[-3000:]
        assert banner().index(chat.group(1)) < banner().index(b"simulate_update demo")
        with urllib.request.urlopen(chat.group(1).decode(), timeout=5) as response:
            assert response.url.startswith(f"http://127.0.0.1:{port}/admin/login/?next=")
        # The newcomer's next step, exactly as printed: the demo update from a second shell
        # (none of run.sh's variables) is answered by a local worker's echo in the sandbox.
        hint = re.search(
            rb"^ +(\S.*simulate_update demo .*)$", (tmp_path / "main.log").read_bytes(), re.M
        )
        assert hint, (tmp_path / "main.log").read_text()[-3000:]
        second_shell = {k: v for k, v in env.items() if k != "PORT"}
        sent = subprocess.run(
            ["bash", "-c", hint.group(1).decode()],
            cwd=clone,
            env=second_shell,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sent.returncode == 0 and '"status": "enqueued"' in sent.stdout, sent.stderr
        deadline = time.monotonic() + 60
        replies = []
        while time.monotonic() < deadline and not replies:
            with contextlib.closing(sqlite3.connect(clone / "var" / "agent_factory.sqlite3")) as db:
                replies = db.execute(
                    "SELECT text FROM telegram_sandboxmessage WHERE text LIKE '%hello%'"
                ).fetchall()
            time.sleep(0.5)
        assert replies, (tmp_path / "main.log").read_text()[-3000:]
        # Stopping the main job (as Ctrl+C or a process manager would) stops its children.
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=45)
        assert not port_open(port), "the web server outlived the main job"
        assert processes_in(clone) == [], "a child outlived the main job"
        assert re.search(rb"Q Cluster \S+ .*has stopped", (tmp_path / "main.log").read_bytes())
    finally:
        # Whatever is left of the process group (only after a failure above).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_dev_flag_serves_with_autoreload_and_stops_every_child(tmp_path):
    """``--dev`` keeps Django's development server with its autoreloader (which serves from
    a child process); SIGTERM still stops all of it."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_URL", "AGENT_FACTORY_", "PUBLIC_BASE_URL"))
    }
    env.update(
        DEBUG="1",
        AGENT_FACTORY_VAR_DIR=str(tmp_path / "var"),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        TELEGRAM_API_BASE_URL=f"http://127.0.0.1:{port}/sandbox/telegram",
        WORKER_PROVIDER="none",
    )
    log = open(tmp_path / "dev.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(ROOT / ".venv/bin/python"), str(ROOT / "manage.py"), "run_embedded", "--dev"]
        + ["--no-qcluster", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        server = None
        while time.monotonic() < deadline and process.poll() is None and server is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz/", timeout=2) as r:
                    server = r.headers["Server"]
            except OSError:
                time.sleep(0.3)
        assert server and server.startswith("WSGIServer"), (tmp_path / "dev.log").read_text()
        # The autoreloader: a parent watching files and the child that serves.
        assert sum("runserver" in cmd for cmd in processes_in(tmp_path)) == 2
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=45)
        assert processes_in(tmp_path) == [], "a child outlived the main job"
        assert not port_open(port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        log.close()
