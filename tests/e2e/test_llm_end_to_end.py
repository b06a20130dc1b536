"""The ``llm`` handler end to end (SPEC §21): Telegram sandbox → webhook → a real local
worker process running the agent's ``llm`` runtime against a fake OpenAI-compatible server on
loopback → reply in the sandbox chat. The second turn carries the first in its context; a
dead endpoint ends in one apology; the model key leaks nowhere."""

from __future__ import annotations

import gzip
import io
import os
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from agents.models import AgentProfile, RuntimeConfig
from agents.secret_store import import_secret
from telegram.dead_letters import APOLOGY_TEXT
from tests.agents.test_secret_store import _scan_database_for
from tests.e2e.test_end_to_end import onboard, post_update, replies, system, wait_for  # noqa: F401
from tests.fakes.openai_server import FakeOpenAI
from workers.lifecycle import transition_worker
from workers.models import DataSnapshot, JobUsage, Message, Worker
from workers.providers.local import local_data_dir

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MODEL_KEY = "sk-e2e-MODEL-KEY-3b7d9f1a0c"


@pytest.fixture
def llm_system(system, monkeypatch):  # noqa: F811 (the imported fixture)
    """The system of the echo end-to-end tests, with workers taking each agent's handler
    from the hydration (no worker-wide handler)."""
    monkeypatch.delenv("AGENT_FACTORY_WORKER_HANDLER", raising=False)
    return system


def llm_agent(base_url: str, **fields) -> None:
    import_secret("alpha.modelKey", MODEL_KEY, actor="e2e")
    AgentProfile.objects.filter(agent_key="alpha").update(
        handler="llm",
        model="openai/gpt-4o-mini",
        base_url=base_url,
        api_key_secret_ref="alpha.modelKey",
        system_prompt="You are the alpha agent.",
        price_per_million_input_tokens=1,
        price_per_million_output_tokens=2,
        **fields,
    )


def answer_from_last_message(body: dict) -> str:
    return "model says: " + body["messages"][-1]["content"]


def test_llm_turns_reply_in_the_chat_with_history_and_usage_and_no_key_leak(
    llm_system, admin_client, caplog, tmp_path
):
    bot = onboard("alpha", "100:alpha-sandbox-token")
    with FakeOpenAI(reply=answer_from_last_message) as fake:
        llm_agent(fake.base_url)
        post_update(llm_system, bot, 1, "my name is Ada", user=31)
        wait_for(lambda: replies("100", 31), what="the first reply")
        wait_for(lambda: Message.objects.filter(status="done").count() == 1, what="completion")
        post_update(llm_system, bot, 2, "what is my name?", user=31)
        wait_for(lambda: len(replies("100", 31)) == 2, what="the second reply")
        wait_for(lambda: Message.objects.filter(status="done").count() == 2, what="completion")
    assert replies("100", 31) == ["model says: my name is Ada", "model says: what is my name?"]
    first, second = fake.completions
    assert first["messages"] == [
        {"role": "system", "content": "You are the alpha agent."},
        {"role": "user", "content": "my name is Ada"},
    ]
    assert second["messages"] == [  # the first turn is in the second request's context
        {"role": "system", "content": "You are the alpha agent."},
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "model says: my name is Ada"},
        {"role": "user", "content": "what is my name?"},
    ]
    assert all(r["headers"]["Authorization"] == f"Bearer {MODEL_KEY}" for r in fake.requests)
    usage = list(JobUsage.objects.order_by("id").values_list("input_tokens", "output_tokens"))
    assert usage == [(11, 7), (11, 7)]
    assert str(JobUsage.objects.first().cost_usd) == "0.000025"  # 11 × 1/M + 7 × 2/M

    # The key leaks nowhere ------------------------------------------------------------------
    worker = Worker.objects.get()
    key = MODEL_KEY.encode()
    environ = Path(f"/proc/{worker.process_id}/environ").read_bytes()
    assert b"AGENT_FACTORY_WORKER_ID=" + worker.worker_id.encode() in environ
    assert key not in environ  # the worker's own environment
    data_dir = local_data_dir(worker.worker_id)
    for path in [p for p in data_dir.rglob("*") if p.is_file()]:
        assert key not in path.read_bytes(), path
    transition_worker(worker, "draining", reason="test drain")  # snapshot, then stop
    wait_for(
        lambda: DataSnapshot.objects.filter(worker_id=worker.worker_id, status="ready").exists(),
        what="the final snapshot",
    )
    snapshot = DataSnapshot.objects.get(worker_id=worker.worker_id, status="ready")
    with snapshot.archive.open("rb") as handle:
        assert key not in gzip.decompress(handle.read())
    logs = list((Path(settings.VAR_DIR) / "logs").glob("worker-*.log"))
    assert logs and all(key not in log.read_bytes() for log in logs)
    assert MODEL_KEY not in caplog.text
    profile = AgentProfile.objects.get(agent_key="alpha")
    pages = [
        "/admin/agents/agentprofile/",
        f"/admin/agents/agentprofile/{profile.pk}/change/",
        "/admin/agents/secret/",
        "/admin/workers/message/",
        f"/admin/workers/message/{Message.objects.first().pk}/change/",
        "/admin/workers/worker/",
        f"/admin/workers/worker/{worker.pk}/change/",
        "/admin/agents/conversation/",
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        assert key not in response.content, page
    outputs = io.StringIO()
    for command in (
        ["agent_status", "alpha"],
        ["agent_status", "alpha", "--usage", "--json"],
        ["configure_agent", "alpha", "--json"],
        ["secret_status"],
    ):
        call_command(*command, stdout=outputs)
    assert "alpha.modelKey" in outputs.getvalue() and MODEL_KEY not in outputs.getvalue()
    assert _scan_database_for(key) == []


def test_a_dead_model_endpoint_fails_retries_and_apologises_once(llm_system):
    config = RuntimeConfig.get()
    config.max_attempts = 2
    config.save()
    bot = onboard("alpha", "100:alpha-sandbox-token")
    with FakeOpenAI() as fake:
        dead_url = fake.base_url
    llm_agent(dead_url, timeout_seconds=1)  # nothing listens there any more
    post_update(llm_system, bot, 1, "hello?", user=41)
    wait_for(
        lambda: Message.objects.filter(status="dead_letter").exists(),
        timeout=90,
        what="the dead letter",
    )
    wait_for(lambda: replies("100", 41), what="the apology")
    time.sleep(1.5)  # nothing more arrives
    assert replies("100", 41) == [APOLOGY_TEXT]
    message = Message.objects.get()
    assert message.attempts == 2 and message.apologized_at is not None
    assert message.last_error.startswith("The model endpoint unreachable (ConnectionError)")
    assert "gave up after" in message.last_error and MODEL_KEY not in message.last_error
    # Both failed attempts were metered (zero tokens, the model named).
    assert list(JobUsage.objects.values_list("outcome", "model", "input_tokens")) == [
        ("failed", "openai/gpt-4o-mini", 0),
        ("failed", "openai/gpt-4o-mini", 0),
    ]
    assert os.environ.get("AGENT_FACTORY_WORKER_HANDLER") is None
