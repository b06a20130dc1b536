""" "typing…" while a job runs (SPEC §22): at claim, then every tick until the job is done."""

from __future__ import annotations

from django.utils import timezone

from telegram import typing
from telegram.typing import TypingTicker
from tests.telegram.test_outbox import API, telegram_job
from workers.models import Message


class Recorder:
    def __init__(self):
        self.calls = []

    def call_once(self, method, payload):
        self.calls.append((method, payload))
        return True


def test_typing_is_shown_while_the_job_processes_and_stops_after(alpha_agent):
    message = telegram_job(chat="77")
    Message.objects.filter(pk=message.pk).update(status=Message.PROCESSING)
    bot = Recorder()
    ticker = TypingTicker(client_for=lambda agent_key: bot)
    ticker.add(message.pk, "alpha", "77", start=False)
    assert ticker.tick() == 1 and ticker.tick() == 1
    assert bot.calls == [("sendChatAction", {"chat_id": "77", "action": "typing"})] * 2
    Message.objects.filter(pk=message.pk).update(status=Message.DONE)
    assert ticker.tick() == 0 and ticker.jobs == {}
    assert len(bot.calls) == 2


def test_a_claim_starts_the_indicator_for_telegram_jobs(
    alpha_agent, make_worker, worker_api, monkeypatch, settings
):
    settings.AGENT_FACTORY_TYPING_INDICATOR = True
    added = []
    monkeypatch.setattr(typing.TICKER, "add", lambda *args, **kw: added.append(args))
    message = telegram_job(chat="88")
    _, token = make_worker("w-typing", heartbeat_at=timezone.now())
    job = worker_api(token).post(f"{API}/claim/", {}, format="json").json()["job"]
    assert job["message_id"] == message.pk
    assert added == [(message.pk, "alpha", "88")]
