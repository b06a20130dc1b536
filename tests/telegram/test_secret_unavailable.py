"""SPEC §23: a secret the key ring cannot decrypt is a clear error on every path of the
telegram app that reads one — the webhook (503), the admin (a message), the after-commit
tasks (a logged reason) — never a traceback or a 500."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agents.models import Secret
from telegram import tasks
from telegram.models import TelegramUpdate
from tests.telegram.conftest import text_update
from workers.models import Message


def lose_key(ref: str) -> None:
    """As if the key that encrypted ``ref`` left AGENT_FACTORY_ENCRYPTION_KEYS."""
    Secret.objects.filter(secret_ref=ref).update(key_id="deadbeef")


def test_webhook_answers_503_and_records_nothing(make_bot, post_update, caplog):
    make_bot("alpha", "100")
    lose_key("telegram.webhookSecret.alpha")
    response = post_update("100", text_update(1, "hi"))
    assert response.status_code == 503 and response.json() == {"error": "unavailable"}
    assert TelegramUpdate.objects.count() == 0 and Message.objects.count() == 0
    [record] = [r for r in caplog.records if "503" in r.getMessage()]
    assert "telegram.webhookSecret.alpha" in record.getMessage() and record.exc_info is None


@pytest.mark.parametrize("step", ["configure_webhook", "reconcile_identity", "rotate_secret"])
def test_admin_onboarding_shows_a_message(admin_client, make_bot, step):
    bot = make_bot("alpha", "100")
    bot.webhook_url = "https://factory.test/telegram/webhook/100/"
    bot.save()
    lose_key("telegram.botToken.alpha")
    lose_key("telegram.webhookSecret.alpha")
    url = reverse("admin:telegram_onboarding", args=[bot.agent.pk])
    response = admin_client.post(url, {"step": step}, follow=True)
    assert response.status_code == 200
    assert "not in AGENT_FACTORY_ENCRYPTION_KEYS" in response.content.decode()


def test_admin_bot_actions_show_a_message(admin_client, make_bot):
    bot = make_bot("alpha", "100")
    lose_key("telegram.botToken.alpha")
    response = admin_client.post(
        reverse("admin:telegram_bot_changelist"),
        {"action": "reconcile_identity", "_selected_action": [bot.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "not in AGENT_FACTORY_ENCRYPTION_KEYS" in response.content.decode()


def test_reply_task_logs_one_line_and_gives_up(make_bot, caplog):
    make_bot("alpha", "100")
    lose_key("telegram.botToken.alpha")
    assert tasks.send_text("alpha", "5", "hello") is False
    assert tasks.answer_callback_query("alpha", "q1") is False
    records = [r for r in caplog.records if "deadbeef" in r.getMessage()]
    assert records and all(r.exc_info is None for r in records)
