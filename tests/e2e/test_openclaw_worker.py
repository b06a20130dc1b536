"""End to end with real OpenClaw (SPEC §21): a sandbox message is answered by the worker
program running the ``openclaw`` handler against a fake model on loopback; the worker stops
(its snapshot is uploaded), a second message is served by a new worker that restored it,
and the model receives the first turn in its context — the agent remembers across machines.
Then the key-leak scan: the model key is in no file of either data dir, no snapshot archive
and no line the workers logged.

The worker names no handler: the agent's runtime settings (``configure_agent
--runtime-json``, the key in the secret store) reach it in the hydration (SPEC §8, §21)."""

from __future__ import annotations

import io
import json
import os
import signal

import pytest
from django.core.management import call_command

from agents.models import RuntimeConfig
from agents.secret_refs import model_api_key_ref
from agents.secret_store import import_secret
from tests.e2e.test_end_to_end import onboard, post_update, replies
from tests.e2e.test_worker_program import wait_until, worker_program
from tests.fakes.openai_server import FakeOpenAI
from tests.workers.openclaw_support import (
    API_KEY,
    archive_members_containing,
    files_containing,
    request_text,
    require_openclaw,
    runtime_section,
)
from workers.lifecycle import transition_worker
from workers.models import DataSnapshot, JobUsage, Message, Worker
from workers.runtime.openclaw_setup import HOME_ENV, default_home

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TURN_TIMEOUT = 240


def run_one_job(live_server, tmp_path, name: str, expected_done: int):
    """A worker program that serves until ``expected_done`` messages are done, then SIGTERM."""
    out = io.StringIO()
    call_command("issue_worker_token", name, stdout=out)
    token = out.getvalue().strip()
    root = tmp_path / name
    root.mkdir()
    sandbox = f"{live_server.url}/sandbox/telegram"
    process = worker_program(
        env={
            "AGENT_FACTORY_API_URL": live_server.url,
            "AGENT_FACTORY_WORKER_TOKEN": token,
            "AGENT_FACTORY_WORKER_ID": name,
            "AGENT_FACTORY_DATA_DIR": str(root / "data"),
            "AGENT_FACTORY_TELEGRAM_API_BASE_URL": sandbox,
            "AGENT_FACTORY_POLL_SECONDS": "0.2",
            "AGENT_FACTORY_HEARTBEAT_SECONDS": "1",
            HOME_ENV: os.environ.get(HOME_ENV) or str(default_home()),
        },
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: Message.objects.filter(status="done").count() >= expected_done
            or process.poll() is not None,
            f"{name}'s job",
            timeout=TURN_TIMEOUT,
        )
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 0, stderr
    # Its process is gone: stopped, as reconcile records a vanished worker (provider none
    # observes nothing), so the conversation is free for the next worker.
    transition_worker(Worker.objects.get(worker_id=name), Worker.STOPPED, reason="exited")
    return root / "data", stdout + stderr


def test_an_openclaw_agent_remembers_across_workers_and_never_leaks_its_key(
    live_server, settings, tmp_path
):
    require_openclaw()
    settings.TELEGRAM_API_BASE_URL = f"{live_server.url}/sandbox/telegram"
    settings.PUBLIC_BASE_URL = live_server.url
    config = RuntimeConfig.get()
    config.provider_kind = "none"  # only this test's workers run
    config.save()
    bot = onboard("alpha", "100:alpha-sandbox-token")
    with FakeOpenAI(reply=lambda body: f"Arr, turn {len(body['messages'])}.") as fake:
        runtime = runtime_section(fake.base_url)
        import_secret(model_api_key_ref("alpha"), runtime.pop("api_key"), actor="test")
        runtime["api_key_secret_ref"] = model_api_key_ref("alpha")
        call_command(
            "configure_agent", "alpha", runtime_json=json.dumps(runtime), stdout=io.StringIO()
        )
        post_update(live_server, bot, 1, "my parrot is called Polly", user=71)
        first_dir, first_log = run_one_job(live_server, tmp_path, "oc-1", 1)
        assert replies("100", 71) == [fake.reply(fake.completions[0])]
        assert DataSnapshot.objects.filter(worker_id="oc-1", status="ready").count() == 1

        seen = len(fake.completions)
        post_update(live_server, bot, 2, "what is my parrot called?", user=71)
        second_dir, second_log = run_one_job(live_server, tmp_path, "oc-2", 2)

    assert len(replies("100", 71)) == 2 and replies("100", 71)[1].startswith("Arr, turn")
    # The new worker's agent got the first turn from the restored snapshot.
    later = request_text(fake.completions[-1])
    assert len(fake.completions) > seen
    assert "my parrot is called Polly" in later and "what is my parrot called?" in later
    assert all(h["authorization"] == f"Bearer {API_KEY}" for h in fake.headers)
    # OpenClaw's token usage became each job's usage (SPEC §21).
    usage = list(JobUsage.objects.filter(outcome="done").values_list("input_tokens", flat=True))
    assert len(usage) == 2 and all(tokens > 0 for tokens in usage), usage

    # Key-leak scan: data dirs, every archive uploaded, everything the workers logged.
    for data_dir in (first_dir, second_dir):
        assert (data_dir / "openclaw" / "workspace").is_dir()
        assert files_containing(data_dir, API_KEY) == []
    archives = DataSnapshot.objects.filter(status="ready")
    assert archives.count() == 2
    for snapshot in archives:
        with snapshot.archive.open("rb") as handle:
            assert archive_members_containing(handle.read(), API_KEY) == []
    assert API_KEY not in first_log + second_log
