"""The whole system on one machine: live server + local provider + real worker processes +
the Telegram sandbox. Updates go in through the signed webhook; replies come out as sandbox
messages sent by the workers."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings

from agents.models import AgentProfile, RuntimeConfig
from agents.secret_store import get_active_secret_value
from agents.skill_bundle import file_sha256
from agents.skills import publish_skill
from telegram.bots import configure_webhook, import_telegram_token
from telegram.models import Bot, SandboxMessage
from tests.e2e.handlers import slow_marker
from workers.lifecycle import transition_worker
from workers.models import DataSnapshot, Message, Worker
from workers.providers.local import local_data_dir, process_alive
from workers.reconcile import reconcile

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TIMEOUT = 60
WORKER_COMMAND = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "run_worker"]


@pytest.fixture
def system(live_server, settings, monkeypatch, tmp_path):
    """Point everything at the live server and its sandbox; stop every worker afterwards."""
    sandbox = f"{live_server.url}/sandbox/telegram"
    settings.TELEGRAM_API_BASE_URL = sandbox
    settings.PUBLIC_BASE_URL = live_server.url
    settings.AGENT_FACTORY_WORKER_API_URL = live_server.url
    settings.AGENT_FACTORY_LOCAL_TERM_GRACE_SECONDS = 5.0
    settings.VAR_DIR = tmp_path / "var"
    settings.AGENT_FACTORY_LOCAL_DATA_ROOT = str(tmp_path / "workers")
    monkeypatch.setenv("TELEGRAM_API_BASE_URL", sandbox)
    # Workers inherit only allowlisted names (SPEC §23): the handler by the environment,
    # the test's fast timers as flags of the worker command.
    monkeypatch.setenv("AGENT_FACTORY_WORKER_HANDLER", "tests.e2e.handlers.slow_echo")
    settings.AGENT_FACTORY_LOCAL_WORKER_COMMAND = [
        *WORKER_COMMAND,
        "--poll-seconds",
        "0.2",
        "--heartbeat-seconds",
        "1",
    ]
    config = RuntimeConfig.get()
    config.provider_kind = "local"
    config.max_workers = 4
    config.spawn_step = 4
    config.lease_seconds = 4
    config.save()
    yield live_server
    for worker in Worker.objects.exclude(process_id=None):
        if process_alive(worker.process_id, worker.worker_id):
            os.killpg(worker.process_id, signal.SIGKILL)


def onboard(agent_key: str, token: str) -> Bot:
    AgentProfile.objects.get_or_create(agent_key=agent_key)
    bot = import_telegram_token(agent_key, token, actor="e2e").bot
    configure_webhook(agent_key, actor="e2e")
    return bot


def post_update(server, bot: Bot, update_id: int, text: str, user: int) -> dict:
    secret = get_active_secret_value(f"telegram.webhookSecret.{bot.agent.agent_key}")
    update = {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "from": {"id": user},
            "chat": {"id": user},
            "date": 0,
            "text": text,
        },
    }
    response = requests.post(
        f"{server.url}/telegram/webhook/{bot.bot_identity}/",
        data=json.dumps(update),
        headers={"X-Telegram-Bot-Api-Secret-Token": secret, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.content
    return response.json()


def wait_for(predicate, *, timeout=TIMEOUT, what="condition"):
    """Drive reconcile (as the schedule would) until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reconcile()
        result = predicate()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def replies(bot_id: str, chat: int) -> list[str]:
    return list(
        SandboxMessage.objects.filter(bot_id=bot_id, chat_id=str(chat))
        .order_by("id")
        .values_list("text", flat=True)
    )


def test_update_is_answered_by_echo_in_the_right_chat(system):
    skill_md = "# Greeter\n"
    files = [
        {"path": "SKILL.md", "content": skill_md, "sha256": file_sha256(skill_md)},
        {"path": "scripts/index.mjs", "content": "export default {};\n"},
    ]
    files[1]["sha256"] = file_sha256(files[1]["content"])
    publish_skill("greeter", "1.0.0", files, actor="e2e")  # released before the worker starts
    bot = onboard("alpha", "100:alpha-sandbox-token")
    assert post_update(system, bot, 1, "hello there", user=501)["status"] == "enqueued"
    wait_for(lambda: replies("100", 501), what="the echo reply")
    assert replies("100", 501) == ["hello there"]
    message = Message.objects.get()
    wait_for(lambda: Message.objects.get(pk=message.pk).status == "done", what="completion")
    message.refresh_from_db()
    assert message.delivered_at is not None
    assert [(e.role, e.content) for e in message.conversation.entries.all()] == [
        ("user", "hello there"),
        ("assistant", "hello there"),
    ]
    # The worker process fetched the manifest and materialised the skill, verified.
    worker = Worker.objects.get()
    skills = local_data_dir(worker.worker_id) / "skills"
    assert (skills / "greeter" / "SKILL.md").read_text() == skill_md


def test_two_bots_same_user_id_get_their_own_agents_reply(system):
    alpha = onboard("alpha", "100:alpha-sandbox-token")
    beta = onboard("beta", "200:beta-sandbox-token")
    post_update(system, alpha, 1, "for alpha", user=777)
    post_update(system, beta, 1, "for beta", user=777)
    wait_for(lambda: replies("100", 777) and replies("200", 777), what="both replies")
    assert replies("100", 777) == ["for alpha"]
    assert replies("200", 777) == ["for beta"]


def test_redelivered_update_is_answered_once(system):
    bot = onboard("alpha", "100:alpha-sandbox-token")
    assert post_update(system, bot, 42, "once", user=9)["status"] == "enqueued"
    assert post_update(system, bot, 42, "once", user=9)["status"] == "duplicate"
    wait_for(lambda: Message.objects.filter(status="done").exists(), what="completion")
    time.sleep(1)
    assert replies("100", 9) == ["once"]


def test_worker_killed_mid_job_still_answers_exactly_once(system):
    bot = onboard("alpha", "100:alpha-sandbox-token")
    post_update(system, bot, 1, "slow please", user=11)
    marker = slow_marker(Path(settings.AGENT_FACTORY_LOCAL_DATA_ROOT))
    wait_for(marker.exists, what="the handler to start")
    first = Worker.objects.get()
    os.killpg(first.process_id, signal.SIGKILL)  # the replacement sees the marker: no pause
    wait_for(lambda: replies("100", 11), what="the reply after the crash")
    wait_for(lambda: Message.objects.get().status == "done", what="completion")
    time.sleep(1)
    assert replies("100", 11) == ["slow please"]
    first.refresh_from_db()
    assert first.status in ("draining", "stopping", "stopped")
    assert Message.objects.get().attempts == 1  # the lost lease counted one attempt


def test_snapshot_is_restored_for_the_same_conversation_only(system):
    bot = onboard("alpha", "100:alpha-sandbox-token")
    post_update(system, bot, 1, "remember apples", user=21)
    wait_for(lambda: replies("100", 21), what="first reply")
    first = Worker.objects.get()
    transition_worker(first, "draining", reason="test drain")  # its next control says stop
    wait_for(
        lambda: DataSnapshot.objects.filter(worker_id=first.worker_id, status="ready").exists(),
        what="the final snapshot",
    )
    wait_for(lambda: Worker.objects.get(pk=first.pk).status == "stopped", what="teardown")

    post_update(system, bot, 2, "and pears", user=21)  # same conversation
    post_update(system, bot, 3, "other chat", user=22)  # another conversation
    wait_for(lambda: replies("100", 21)[1:] and replies("100", 22), what="second replies")
    workers = {
        w.assigned_conversation.conversation_id: w
        # An idle worker may still be waiting for work, unassigned (long-poll claims).
        for w in Worker.objects.exclude(pk=first.pk).filter(assigned_conversation__isnull=False)
    }
    same = local_data_dir(workers["telegram:100:21"].worker_id)
    other = local_data_dir(workers["telegram:100:22"].worker_id)
    transcript = (same / "workspace" / "transcript.txt").read_text()
    assert "remember apples" in transcript and "and pears" in transcript
    assert "remember apples" not in (other / "workspace" / "transcript.txt").read_text()
