"""Server delivery (SPEC §22): complete writes the outbox once; the sender sends each row
once, in order per chat, paced, and says why a row failed."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from agents.models import AgentProfile, ConversationEntry
from agents.secret_store import import_secret
from telegram.bot_api import TelegramApiError, TelegramNetworkError
from telegram.delivery import DELIVERY_SINK
from telegram.outbox import write_rows
from telegram.outbox_models import OutboxBot, OutboxMessage
from telegram.outbox_sender import MAX_ATTEMPTS, drain_bot, drain_outbox, recover_stuck_rows
from tests.conftest import post_job
from workers.models import JobUsage, Message
from workers.queue import enqueue_message

API = "/api/v1/worker"
BOT_TOKEN = "4242:server-only-token"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeBot:
    """A Bot API client: records (clock time, payload) per sendMessage; ``answers`` maps a
    chat id to a list of exceptions to raise first."""

    def __init__(self, clock=None, answers=None):
        self.clock = clock
        self.sent: list[tuple[float, dict]] = []
        self.answers = {key: list(value) for key, value in (answers or {}).items()}

    def call_once(self, method, payload):
        assert method == "sendMessage"
        queued = self.answers.get(payload["chat_id"])
        if queued:
            raise queued.pop(0)
        self.sent.append((self.clock() if self.clock else 0.0, dict(payload)))
        return {"message_id": len(self.sent)}

    def texts(self, chat_id=None):
        return [p["text"] for _, p in self.sent if chat_id is None or p["chat_id"] == chat_id]


def telegram_job(agent_key="alpha", chat="55", conversation="conv-t", text="hi"):
    payload = {
        "provider": "telegram",
        "provider_user_id": chat,
        "message_text": text,
        "metadata": {"telegram_chat_id": chat},
    }
    return enqueue_message(
        conversation_id=conversation, agent_key=agent_key, payload=payload
    ).message


@pytest.fixture
def leased(alpha_agent, claim_as):
    message = telegram_job()
    _, api, job = claim_as("w-out")
    assert job["message_id"] == message.pk
    return message, api, job


def complete(api, job, **body):
    return post_job(api, job, "complete", **body)


REPLY = {"text": "**Hello** <you>\n\n" + "word " * 1000, "format": "markdown"}
HISTORY = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]
USAGE = {"input_tokens": 5, "output_tokens": 7, "model": "m"}


def test_complete_writes_reply_history_and_usage_once_and_the_rows_are_sent_once(leased):
    message, api, job = leased
    first = complete(api, job, reply=REPLY, history=HISTORY, usage=USAGE)
    assert first.status_code == 200, first.content
    ids = first.json()["outbox"]
    assert first.json()["status"] == "done" and len(ids) >= 2  # 5000+ chars: split
    rows = list(OutboxMessage.objects.order_by("id"))
    assert [r.pk for r in rows] == ids and {r.job_id for r in rows} == {message.pk}
    assert rows[0].text.startswith("<b>Hello</b> &lt;you&gt;") and rows[0].parse_mode == "HTML"
    assert [(r.part, r.parts) for r in rows] == [(i, len(ids)) for i in range(len(ids))]
    assert all(len(r.text) <= 4096 for r in rows)
    assert ConversationEntry.objects.filter(source_message_id=message.pk).count() == 2
    assert JobUsage.objects.filter(message_id=message.pk).count() == 1
    assert Message.objects.get(pk=message.pk).status == Message.DONE

    # A retried complete (its answer was lost) answers the first answer and adds nothing.
    again = complete(api, job, reply=REPLY, history=HISTORY, usage=USAGE)
    assert again.status_code == 200 and again.json() == {"status": "done", "outbox": ids}
    assert OutboxMessage.objects.count() == len(ids)
    assert ConversationEntry.objects.filter(source_message_id=message.pk).count() == 2
    assert JobUsage.objects.filter(message_id=message.pk).count() == 1

    bot = FakeBot()
    assert drain_bot("alpha", client=bot, sleep=lambda s: None)["sent"] == len(ids)
    assert drain_bot("alpha", client=bot, sleep=lambda s: None)["sent"] == 0
    assert len(bot.sent) == len(ids) and all(p["chat_id"] == "55" for _, p in bot.sent)
    assert Message.objects.get(pk=message.pk).delivered_at is not None


def test_a_killed_sender_leaves_a_row_in_sending_that_is_retried_once_and_counted(leased):
    message, api, job = leased
    reply = {"text": "a" * 3000 + "\n\n" + "x" * 2000, "format": "plain"}
    ids = complete(api, job, reply=reply).json()["outbox"]
    # The sender died after marking the first part sending (maybe after Telegram took it).
    OutboxMessage.objects.filter(pk=ids[0]).update(
        status=OutboxMessage.SENDING, sending_since=timezone.now() - dt.timedelta(seconds=61)
    )
    bot = FakeBot()
    drain_bot("alpha", client=bot, sleep=lambda s: None)
    assert bot.sent == []  # the later part waits behind the unfinished one (order per chat)
    assert recover_stuck_rows() == 1
    assert recover_stuck_rows() == 0
    drain_bot("alpha", client=bot, sleep=lambda s: None)
    assert bot.texts() == ["a" * 3000, "x" * 2000]
    rows = {r.pk: r for r in OutboxMessage.objects.all()}
    assert rows[ids[0]].stuck_retries == 1 and rows[ids[1]].stuck_retries == 0
    assert all(r.status == OutboxMessage.SENT for r in rows.values())
    # A row still inside the 60 s is left alone (its sender may be alive).
    OutboxMessage.objects.filter(pk=ids[1]).update(
        status=OutboxMessage.SENDING, sending_since=timezone.now() - dt.timedelta(seconds=30)
    )
    assert recover_stuck_rows() == 0


def test_a_reply_from_a_compatibility_mode_agent_is_refused(leased, alpha_agent):
    message, api, job = leased
    alpha_agent.delivery = AgentProfile.WORKER_DELIVERY
    alpha_agent.save()
    response = complete(api, job, reply={"text": "hi"}, history=HISTORY)
    assert response.status_code == 400 and response.json()["error"] == "reply_not_expected"
    assert Message.objects.get(pk=message.pk).status == Message.PROCESSING
    assert not OutboxMessage.objects.exists() and not ConversationEntry.objects.exists()
    assert complete(api, job).json() == {"status": "done", "outbox": []}


def test_the_bot_token_is_in_no_hydration_bundle_of_a_server_delivery_agent(
    alpha_agent, make_worker, worker_api
):
    import_secret("telegram.botToken.alpha", BOT_TOKEN, actor="t", metadata={"bot_identity": "4"})
    worker, token = make_worker("w-h", heartbeat_at=timezone.now())
    api = worker_api(token)
    for index in range(3):
        telegram_job(conversation=f"c-{index}", chat=str(100 + index))
    for _ in range(3):
        job = api.post(f"{API}/claim/", {}, format="json").json()["job"]
        bundle = api.get(
            f"{API}/jobs/{job['message_id']}/hydration/", {"lease_id": job["lease_id"]}
        )
        assert bundle.status_code == 200
        assert BOT_TOKEN not in bundle.content.decode()
        assert bundle.json()["telegram_bot_token"] is None
        complete(api, job, reply={"text": "ok"})
        worker.refresh_from_db()
        worker.assigned_conversation = None
        worker.save(update_fields=["assigned_conversation"])
    assert OutboxMessage.objects.count() == 3


def test_a_429_pauses_only_that_bot(alpha_agent, beta_agent):
    write_rows("alpha", "1", "a1")
    write_rows("alpha", "2", "a2")
    write_rows("beta", "1", "b1")
    limited = TelegramApiError("sendMessage", 429, "Too Many Requests", retry_after=30)
    alpha_bot = FakeBot(answers={"1": [limited]})
    counts = drain_bot("alpha", client=alpha_bot, sleep=lambda s: None)
    assert counts["paused"] == 1 and alpha_bot.sent == []
    paused_until = OutboxBot.objects.get(agent_key="alpha").paused_until
    assert paused_until > timezone.now() + dt.timedelta(seconds=25)
    row = OutboxMessage.objects.get(agent_key="alpha", chat_id="1")
    assert row.status == OutboxMessage.PENDING and row.attempts == 0
    # The other bot is not held up; the paused one sends nothing until the pause ends.
    beta_bot = FakeBot()
    assert drain_bot("beta", client=beta_bot, sleep=lambda s: None)["sent"] == 1
    assert drain_bot("alpha", client=alpha_bot, sleep=lambda s: None)["sent"] == 0
    OutboxBot.objects.filter(agent_key="alpha").update(paused_until=timezone.now())
    OutboxMessage.objects.filter(agent_key="alpha").update(next_attempt_at=timezone.now())
    assert drain_bot("alpha", client=alpha_bot, sleep=lambda s: None)["sent"] == 2


def test_a_blocked_user_marks_the_row_failed_with_the_reason_and_the_others_go_on(alpha_agent):
    for chat in ("1", "2", "3"):
        write_rows("alpha", chat, f"to {chat}")
    blocked = TelegramApiError("sendMessage", 403, "Forbidden: bot was blocked by the user")
    bot = FakeBot(answers={"2": [blocked]})
    drain_bot("alpha", client=bot, sleep=lambda s: None)
    assert bot.texts() == ["to 1", "to 3"]
    failed = OutboxMessage.objects.get(chat_id="2")
    assert failed.status == OutboxMessage.FAILED
    assert failed.last_error == "403: Forbidden: bot was blocked by the user"


def test_server_errors_and_network_errors_are_retried_with_backoff_then_failed(alpha_agent):
    write_rows("alpha", "1", "first")
    write_rows("alpha", "1", "second")
    bot = FakeBot(answers={"1": [TelegramApiError("sendMessage", 502, "Bad Gateway")]})
    drain_bot("alpha", client=bot, sleep=lambda s: None)
    row = OutboxMessage.objects.get(text="first")
    assert row.status == OutboxMessage.PENDING and row.attempts == 1
    assert row.next_attempt_at > timezone.now()
    assert bot.sent == []  # "second" waits behind "first": order per chat
    OutboxMessage.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    drain_bot("alpha", client=bot, sleep=lambda s: None)
    assert bot.texts() == ["first", "second"]

    write_rows("alpha", "9", "doomed")
    error = TelegramNetworkError("Telegram sendMessage failed: network error (ConnectionError)")
    bot = FakeBot(answers={"9": [error] * MAX_ATTEMPTS})
    for _ in range(MAX_ATTEMPTS):
        OutboxMessage.objects.filter(chat_id="9").update(next_attempt_at=timezone.now())
        drain_bot("alpha", client=bot, sleep=lambda s: None)
    doomed = OutboxMessage.objects.get(chat_id="9")
    assert doomed.status == OutboxMessage.FAILED and doomed.attempts == MAX_ATTEMPTS
    assert doomed.last_error.startswith(f"gave up after {MAX_ATTEMPTS} attempts")


def test_refused_entities_are_sent_again_as_plain_text(alpha_agent):
    write_rows("alpha", "1", "**bold** <x>", text_format="markdown")
    refused = TelegramApiError("sendMessage", 400, "Bad Request: can't parse entities")
    bot = FakeBot(answers={"1": [refused]})
    drain_bot("alpha", client=bot, sleep=lambda s: None)
    assert bot.sent[0][1] == {"chat_id": "1", "text": "**bold** <x>"}
    row = OutboxMessage.objects.get()
    assert row.status == OutboxMessage.SENT and row.sent_as_plain


def test_pacing_per_bot_and_per_chat_measured_with_a_fake_clock(alpha_agent):
    clock = FakeClock()
    for index in range(60):
        write_rows("alpha", str(1000 + index), f"broadcast {index}")
    for index in range(3):
        write_rows("alpha", "7", f"private {index}")
        write_rows("alpha", "-100", f"group {index}")
    bot = FakeBot(clock=clock)
    counts = drain_bot("alpha", client=bot, clock=clock, sleep=clock.sleep, max_seconds=60)
    assert counts["sent"] == 66 and len(bot.sent) == 66
    times = [at for at, _ in bot.sent]
    # Per bot: never more than 30 in any one-second window.
    for index, at in enumerate(times):
        assert sum(1 for other in times[index:] if other < at + 1.0 - 1e-6) <= 30
    assert times[59] - times[0] >= 59 / 30 - 1e-9

    def sent_to(chat):
        return [at for at, payload in bot.sent if payload["chat_id"] == chat]

    private, group = sent_to("7"), sent_to("-100")
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(private, private[1:], strict=False))
    assert all(b - a >= 3.0 - 1e-9 for a, b in zip(group, group[1:], strict=False))
    assert bot.texts("7") == ["private 0", "private 1", "private 2"]  # in order


def test_the_safety_net_recovers_stuck_rows_and_starts_senders(alpha_agent, monkeypatch):
    started = []
    monkeypatch.setattr(
        "telegram.outbox_sender.async_task", lambda func, key, **kw: started.append(key)
    )
    write_rows("alpha", "1", "hello")
    OutboxMessage.objects.update(
        status=OutboxMessage.SENDING, sending_since=timezone.now() - dt.timedelta(minutes=5)
    )
    assert drain_outbox() == {"recovered": 1, "bots": 1}
    assert started == ["alpha"]


def test_one_sender_per_bot(alpha_agent):
    write_rows("alpha", "1", "hello")
    OutboxBot.objects.create(
        agent_key="alpha", sender_until=timezone.now() + dt.timedelta(seconds=30)
    )
    bot = FakeBot()
    assert drain_bot("alpha", client=bot, sleep=lambda s: None)["sent"] == 0
    OutboxBot.objects.update(sender_until=timezone.now() - dt.timedelta(seconds=1))
    assert drain_bot("alpha", client=bot, sleep=lambda s: None)["sent"] == 1


def test_the_sink_ignores_replies_outside_telegram(alpha_agent):
    message = enqueue_message(
        conversation_id="api-1",
        agent_key="alpha",
        payload={"provider": "api", "provider_user_id": "u", "message_text": "hi"},
    ).message
    assert DELIVERY_SINK.write_reply(message, {"text": "hello"}, timezone.now()) == []
    assert json.dumps(DELIVERY_SINK.reply_ids(message.pk)) == "[]"


def test_the_admin_lists_failures_with_their_reason_and_retries_them(admin_client, alpha_agent):
    from django.urls import reverse

    from agents.models import AuditEvent

    write_rows("alpha", "1", "hello")
    write_rows("alpha", "2", "sent fine")
    OutboxMessage.objects.filter(chat_id="1").update(
        status=OutboxMessage.FAILED, attempts=3, last_error="403: Forbidden: bot was blocked"
    )
    OutboxMessage.objects.filter(chat_id="2").update(status=OutboxMessage.SENT)
    url = reverse("admin:telegram_outboxmessage_changelist")
    page = admin_client.get(url, {"status__exact": "failed"})
    assert page.status_code == 200 and page.context["cl"].result_count == 1
    assert b"403: Forbidden: bot was blocked" in page.content
    ids = list(OutboxMessage.objects.values_list("pk", flat=True))
    response = admin_client.post(url, {"action": "retry_selected", "_selected_action": ids})
    assert response.status_code == 302
    row = OutboxMessage.objects.get(chat_id="1")
    assert row.status == OutboxMessage.PENDING and row.attempts == 0
    assert OutboxMessage.objects.get(chat_id="2").status == OutboxMessage.SENT  # untouched
    assert AuditEvent.objects.filter(action="telegram.outbox_retry").count() == 1


def test_the_thread_sender_drains_at_once_without_the_task_queue(settings, monkeypatch):
    import threading

    from telegram.outbox import start_sender

    settings.AGENT_FACTORY_OUTBOX_SENDER = "thread"
    drained = threading.Event()
    monkeypatch.setattr("telegram.outbox_sender.drain_bot", lambda key: drained.set())
    monkeypatch.setattr(
        "telegram.outbox.async_task", lambda *a, **k: pytest.fail("no task in thread mode")
    )
    start_sender("alpha")
    assert drained.wait(5)


def test_eligible_rows_are_the_due_heads_of_their_chats_oldest_first(alpha_agent):
    from telegram.outbox_sender import eligible_rows

    now = timezone.now()
    later = now + dt.timedelta(minutes=5)

    def row(chat, status=OutboxMessage.PENDING, due=now, agent="alpha"):
        return OutboxMessage.objects.create(
            agent_key=agent, chat_id=chat, text="x", status=status, next_attempt_at=due
        ).pk

    sending_head = row("1", OutboxMessage.SENDING)
    row("1")  # behind a row being sent
    row("2", due=later)  # a head waiting out its backoff
    row("2")  # behind it
    free = row("3")
    row("3")  # second in its chat
    row("4", OutboxMessage.SENT)
    after_sent = row("4")  # sent rows hold nothing back
    row("5", agent="beta")  # another bot's
    assert sending_head and list(eligible_rows("alpha", now).values_list("pk", flat=True)) == [
        free,
        after_sent,
    ]
    assert list(eligible_rows("alpha", now, limit=1).values_list("pk", flat=True)) == [free]
