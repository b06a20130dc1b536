"""``agent-factory-worker`` as its own program (SPEC §12): the console script's entry point,
run in a clean environment (no DJANGO_SETTINGS_MODULE, no server variable) with Django and
every app made unimportable, answers a real job from a live server and stops cleanly.

``AF_TEST_WORKER_PROGRAM=/path/to/venv/bin/agent-factory-worker`` runs an installed script
instead (e.g. from a venv holding only the wheel and ``requests``, no Django at all)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from django.core.management import call_command

from agents.models import RuntimeConfig
from tests.e2e.test_end_to_end import onboard, post_update, replies
from workers.models import DataSnapshot, Message

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("django", "rest_framework", "config", "agents", "telegram", "fly")
ENTRY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"][
    "agent-factory-worker"
]


def worker_program(*args: str, env: dict[str, str], **popen) -> subprocess.Popen:
    """The console script's entry point, with the server's code unimportable."""
    clean = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **env}
    installed = os.environ.get("AF_TEST_WORKER_PROGRAM")
    if installed:  # run outside the checkout, so only the installed package is importable
        return subprocess.Popen(
            [installed, *args], cwd=Path(installed).parent, env=clean, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen,
        )  # fmt: skip
    module, _, function = ENTRY.partition(":")
    script = (
        "import sys\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None  # any import of it now raises ImportError\n"
        f"from {module} import {function} as main\n"
        "sys.exit(main())\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def wait_until(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_help_runs_without_django():
    process = worker_program("--help", env={})
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    text = " ".join(out.split())
    assert text.startswith("usage: agent-factory-worker")
    assert "--telegram-api-base-url" in text and "3 the server refused the token" in text


def test_the_program_answers_a_real_job_then_stops_on_sigterm(live_server, settings, tmp_path):
    sandbox = f"{live_server.url}/sandbox/telegram"
    settings.TELEGRAM_API_BASE_URL = sandbox
    settings.PUBLIC_BASE_URL = live_server.url
    config = RuntimeConfig.get()
    config.provider_kind = "none"  # nothing spawns a worker but this test
    config.save()
    bot = onboard("alpha", "100:alpha-sandbox-token")
    assert post_update(live_server, bot, 1, "hello program", user=61)["status"] == "enqueued"
    out = io.StringIO()
    call_command("issue_worker_token", "program-1", stdout=out)
    token = out.getvalue().strip()
    data_dir = tmp_path / "data"
    process = worker_program(
        env={
            "AGENT_FACTORY_API_URL": live_server.url,
            "AGENT_FACTORY_WORKER_TOKEN": token,
            "AGENT_FACTORY_WORKER_ID": "program-1",
            "AGENT_FACTORY_DATA_DIR": str(data_dir),
            "AGENT_FACTORY_TELEGRAM_API_BASE_URL": sandbox,
            "AGENT_FACTORY_POLL_SECONDS": "0.2",
            "AGENT_FACTORY_HEARTBEAT_SECONDS": "1",
        },
        start_new_session=True,
    )
    try:
        wait_until(lambda: replies("100", 61) or process.poll() is not None, "the reply")
        wait_until(lambda: Message.objects.get().status == "done", "completion")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 0, err
    assert replies("100", 61) == ["hello program"]
    message = Message.objects.get()
    assert message.delivered_at is not None
    assert (data_dir / "workspace" / "transcript.txt").read_text() == "hello program\n"
    assert DataSnapshot.objects.filter(worker_id="program-1", status="ready").count() == 1
    assert token not in out + err and "alpha-sandbox-token" not in out + err
