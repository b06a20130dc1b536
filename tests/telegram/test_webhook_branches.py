"""More of SPEC §5.3: secret handling, dedupe inside the enqueue transaction, async replies,
routing of bound users, media kinds, and the reconcile trigger after commit."""

from __future__ import annotations

import dataclasses
import json

import pytest
import responses

from agents.models import Conversation
from telegram import ingress, pairing, refusals, sql, webhook
from telegram.models import IdentityBinding, IngressIssue, PairingCode, TelegramUpdate
from telegram.outbox_models import OutboxMessage
from telegram.pairing import bind_identity, create_pairing_code
from tests.telegram.conftest import bind, legacy_binding, text_update
from workers.models import Message, MessageAttachment


def button_press(update_id: int, query_id: str) -> dict:
    """A callback_query update: user 555 pressed "button-1" under a message in chat 555."""
    return {
        "update_id": update_id,
        "callback_query": {
            "id": query_id,
            "from": {"id": 555},
            "data": "button-1",
            "message": {"message_id": 3, "chat": {"id": 555}, "text": "pick"},
        },
    }


@pytest.fixture
def no_telegram(tg):
    """Nothing registered, so any outbound HTTP fails: the webhook never calls Telegram inline."""
    return tg


@pytest.fixture
def tasks(monkeypatch):
    """Record django-q2 tasks instead of running them."""
    calls = []

    def fake_async_task(func, *args, **kwargs):
        calls.append((func, args))

    monkeypatch.setattr("django_q.tasks.async_task", fake_async_task)
    return calls


def test_forged_requests_are_refused_and_write_nothing(make_bot, post_update):
    real = "s" * 40
    make_bot("alpha", "100", secret=real)
    guesses = [
        "s" * 39,  # a prefix of the real secret
        "s" * 41,
        "S" * 40,  # case matters
        "af_v1_100",  # the upstream's public, derivable header
        "100",
        real + " ",
        "ş" * 40,  # non-ASCII must not crash the comparison
    ]
    for guess in guesses:
        response = post_update("100", text_update(1, "hi"), secret=guess)
        assert response.status_code == 403, guess
        assert response.json() == {"error": "invalid_secret_token"}
    # The right secret on another bot's URL is refused too (the secret is per bot).
    make_bot("beta", "200", secret="b" * 40)
    assert post_update("200", text_update(1, "hi"), secret=real).status_code == 403
    assert TelegramUpdate.objects.count() == 0 and Message.objects.count() == 0


def test_secret_is_checked_before_the_body_is_parsed(make_bot, post_update):
    make_bot("alpha", "100")
    response = post_update("100", None, raw=b"not json", secret="wrong")
    assert response.status_code == 403  # not 400: nothing is revealed to a forger


def test_secret_compare_is_constant_time_over_every_candidate(monkeypatch):
    seen = []
    real_compare = webhook.hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(webhook.hmac, "compare_digest", spy)
    assert webhook.secret_matches("current", ["current", "previous"]) is True
    # Even after a match, the other candidate is compared too: timing reveals nothing.
    assert [b for _, b in seen] == [b"current", b"previous"]
    assert webhook.secret_matches("nope", ["current"]) is False
    assert webhook.secret_matches(None, ["current"]) is False
    assert webhook.secret_matches("", ["current"]) is False


def test_bot_without_webhook_secret_refuses_everything(make_bot, post_update):
    from agents.models import Secret

    make_bot("alpha", "100")
    Secret.objects.filter(secret_ref="telegram.webhookSecret.alpha").delete()
    assert post_update("100", text_update(1, "hi")).status_code == 403


def test_get_is_405_json(make_bot, client):
    make_bot("alpha", "100")
    response = client.get("/telegram/webhook/100/")
    assert response.status_code == 405 and response.json() == {"error": "method_not_allowed"}


def never_seen(monkeypatch) -> None:
    """Make the early dedupe flag read with the bot's row always say "not seen"."""
    real = webhook.load_bot

    def load_bot(identity, update_id=None, sender=None):
        loaded = real(identity, update_id, sender)
        return dataclasses.replace(loaded, update_seen=False) if loaded else loaded

    monkeypatch.setattr(webhook, "load_bot", load_bot)


def test_redelivered_update_is_enqueued_once_even_past_the_early_check(
    make_bot, post_update, monkeypatch
):
    """The early 'seen?' query is only a shortcut: with it disabled (as when two deliveries
    race past it), the unique row written in the enqueue transaction still dedupes, and the
    loser's transaction leaves no queue row or conversation behind."""
    make_bot("alpha", "100")
    first = post_update("100", text_update(7, "hello")).json()
    assert first["status"] == "enqueued"
    never_seen(monkeypatch)
    monkeypatch.setattr(sql, "update_seen", lambda *a: False)
    second = post_update("100", text_update(7, "hello", chat=999))
    assert second.status_code == 503  # the check says "not seen", so: redeliver, never drop
    monkeypatch.undo()
    third = post_update("100", text_update(7, "hello", chat=999))
    assert third.json() == {"ok": True, "status": "duplicate"}
    assert Message.objects.count() == 1
    assert TelegramUpdate.objects.filter(bot_identity="100", update_id=7).count() == 1
    # The racing delivery's conversation (another chat) was rolled back with it.
    assert not Conversation.objects.filter(conversation_id="telegram:100:999").exists()


def test_racing_duplicate_answers_duplicate(make_bot, post_update, monkeypatch):
    make_bot("alpha", "100")
    post_update("100", text_update(7, "hello"))
    # Not seen at first (the early check, with the bot's row); seen once the insert
    # conflicted (the real lookup after the rollback).
    never_seen(monkeypatch)
    assert post_update("100", text_update(7, "hello")).json() == {
        "ok": True,
        "status": "duplicate",
    }
    assert Message.objects.count() == 1


def test_same_update_id_on_two_bots_is_two_updates(make_bot, post_update):
    make_bot("alpha", "100")
    make_bot("beta", "200")
    assert post_update("100", text_update(5, "a")).json()["status"] == "enqueued"
    assert post_update("200", text_update(5, "b")).json()["status"] == "enqueued"
    assert Message.objects.count() == 2


def test_start_pairing_is_never_enqueued_and_replies_through_a_task(
    make_bot, post_update, no_telegram, tasks, django_capture_on_commit_callbacks, monkeypatch
):
    make_bot("alpha", "100")
    code = create_pairing_code("user-1", "alpha", actor="test")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_update("100", text_update(1, f"/start {code.code}"))
    assert response.json() == {"ok": True, "status": "paired"}
    assert Message.objects.count() == 0 and Conversation.objects.count() == 0
    assert TelegramUpdate.objects.get().outcome == "paired"
    assert len(no_telegram.calls) == 0 and tasks == []  # nothing inline, nothing before commit
    [notice] = OutboxMessage.objects.all()  # written with the update, sent after commit
    assert (notice.agent_key, notice.chat_id, notice.kind) == ("alpha", "555", "notice")
    assert "paired" in notice.text
    started = []
    monkeypatch.setattr("telegram.outbox.start_sender", started.append)
    for callback in callbacks:
        callback()
    assert started == ["alpha"]
    assert len(no_telegram.calls) == 0


def test_failed_pairing_records_the_reason_and_replies_the_uniform_refusal(
    make_bot, post_update, tasks, django_capture_on_commit_callbacks
):
    make_bot("alpha", "100")
    with django_capture_on_commit_callbacks(execute=True):
        body = post_update("100", text_update(1, "/start ZZZZZZZZZZ")).json()
    assert body == {"ok": True, "status": "pairing_failed", "detail": "not_found"}
    [notice] = OutboxMessage.objects.all()
    assert notice.text == refusals.PAIRING_REFUSED_TEXT
    assert Message.objects.count() == 0
    # The reason stays visible to the admin: the recorded update and an ingress issue.
    assert TelegramUpdate.objects.get().detail == "not_found"
    issue = IngressIssue.objects.get()
    assert issue.kind == "pairing_failed" and "not_found" in issue.detail


def test_start_addressed_to_this_bot_pairs(make_bot, post_update):
    make_bot("alpha", "100", username="AlphaBot")
    code = create_pairing_code("user-1", "alpha", actor="test")
    body = post_update("100", text_update(1, f"/start@alphabot {code.code.lower()}")).json()
    assert body == {"ok": True, "status": "paired"}
    # Addressed to another bot: not a pairing for us, just a message.
    other = create_pairing_code("user-2", "alpha", actor="test")
    body = post_update("100", text_update(2, f"/start@OtherBot {other.code}", user=9)).json()
    assert body["status"] == "enqueued"
    assert PairingCode.objects.get(pk=other.pk).status == "pending"


def test_text_message_triggers_reconcile_only_after_commit(
    make_bot, post_update, no_telegram, monkeypatch, django_capture_on_commit_callbacks
):
    triggered = []
    monkeypatch.setattr("workers.triggers.request_reconcile", lambda: triggered.append(1))
    make_bot("alpha", "100")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        body = post_update("100", text_update(1, "hello")).json()
    assert body["status"] == "enqueued" and triggered == []
    for callback in callbacks:
        callback()
    assert triggered == [1]
    assert len(no_telegram.calls) == 0


def test_unbound_and_unroutable_surface_to_admins(
    make_bot, post_update, admin_client, tasks, django_capture_on_commit_callbacks
):
    make_bot("alpha", "100", require_telegram_binding=True)
    make_bot("beta", "200", enabled=False)
    with django_capture_on_commit_callbacks(execute=True):
        unbound = post_update("100", text_update(1, "hi", user=31))
    unroutable = post_update("200", text_update(1, "hi", user=32))
    assert unbound.status_code == 200 and unbound.json()["status"] == "unbound"
    assert unroutable.status_code == 200 and unroutable.json()["status"] == "unroutable"
    # The 'please pair' notice, through the outbox.
    assert list(OutboxMessage.objects.values_list("text", flat=True)) == [
        refusals.PLEASE_PAIR_TEXT
    ]
    page = admin_client.get("/admin/telegram/ingressissue/").content.decode()
    assert "not paired with &#x27;alpha&#x27;" in page or "not paired with 'alpha'" in page
    assert "disabled" in page
    assert set(TelegramUpdate.objects.values_list("outcome", flat=True)) == {
        "unbound",
        "unroutable",
    }
    assert Message.objects.count() == 0


def test_binding_to_a_disabled_agent_is_unroutable(make_bot, post_update):
    bot = make_bot("alpha", "100")
    binding = bind_identity("u1", bot.agent, bot_identity="100", telegram_user_id="555", actor="t")
    bot.agent.enabled = False
    bot.agent.save()
    assert post_update("100", text_update(1, "hi")).json()["status"] == "unroutable"
    assert IngressIssue.objects.get().kind == "unroutable"
    assert IdentityBinding.objects.get(pk=binding.pk).status == "active"


def test_bound_users_of_two_bots_with_the_same_telegram_id_reach_their_own_agents(
    make_bot, post_update
):
    a = make_bot("alpha", "100")
    b = make_bot("beta", "200")
    for consumer, bot in (("u-a", a), ("u-b", b)):
        code = create_pairing_code(consumer, bot.agent.agent_key, actor="t")
        assert (
            post_update(bot.bot_identity, text_update(1, f"/start {code.code}", user=42)).json()[
                "status"
            ]
            == "paired"
        )
    assert IdentityBinding.objects.filter(status="active", telegram_user_id="42").count() == 2
    to_a = post_update("100", text_update(2, "hello a", user=42)).json()
    to_b = post_update("200", text_update(2, "hello b", user=42)).json()
    message_a = Message.objects.get(pk=to_a["message_id"])
    message_b = Message.objects.get(pk=to_b["message_id"])
    assert (message_a.agent_key, message_a.conversation.conversation_id) == (
        "alpha",
        "user-agent:alpha:u-a",
    )
    assert (message_b.agent_key, message_b.conversation.conversation_id) == (
        "beta",
        "user-agent:beta:u-b",
    )
    assert message_a.payload["metadata"]["consumer_user_id"] == "u-a"


def test_no_chat_fallback_a_binding_routes_only_its_own_user(make_bot, post_update):
    bot = make_bot("alpha", "100")
    bind(bot, "by-chat", user="1", chat="900")
    bind(bot, "by-user", user="2", chat="901")
    # Someone else in chat 900 is not user 1: the chat's own conversation, not u1's.
    body = post_update("100", text_update(1, "x", user=3, chat=900)).json()
    message = Message.objects.get(pk=body["message_id"])
    assert message.conversation.conversation_id == "telegram:100:900"
    assert "consumer_user_id" not in message.payload["metadata"]
    # User 2 in a private chat: their own binding.
    body = post_update("100", text_update(2, "y", user=2)).json()
    assert Message.objects.get(pk=body["message_id"]).conversation.conversation_id == (
        "user-agent:alpha:by-user"
    )
    # The same ids on a bot that has no bindings: never matched (bindings are bot-scoped).
    make_bot("beta", "200")
    body = post_update("200", text_update(1, "z", user=2)).json()
    assert Message.objects.get(pk=body["message_id"]).conversation.conversation_id == (
        "telegram:200:2"
    )


def test_legacy_binding_is_never_matched_even_when_binding_required(make_bot, post_update):
    bot = make_bot("alpha", "100", require_telegram_binding=True)
    legacy_binding(bot.agent, "old", telegram_user_id="555", telegram_chat_id="555")
    assert pairing.resolve_binding("100", "555") is None
    assert post_update("100", text_update(1, "hi")).json()["status"] == "unbound"


@pytest.mark.parametrize(
    "kind,item",
    [
        ("video", {"file_id": "v1", "file_size": 1000, "mime_type": "video/mp4"}),
        ("audio", {"file_id": "a1", "file_name": "song.mp3", "mime_type": "audio/mpeg"}),
        ("voice", {"file_id": "o1", "mime_type": "audio/ogg", "duration": 3}),
        ("document", {"file_id": "d1", "file_name": "report.pdf", "file_size": 5}),
    ],
)
def test_media_kinds_are_enqueued_with_file_ids(make_bot, post_update, kind, item):
    make_bot("alpha", "100")
    update = {"update_id": 3, "message": {"from": {"id": 5}, "chat": {"id": 5}, kind: item}}
    body = post_update("100", update).json()
    assert body["status"] == "enqueued"
    message = Message.objects.get(pk=body["message_id"])
    attachment = MessageAttachment.objects.get(message=message)
    assert attachment.kind == kind and attachment.telegram_file_id == item["file_id"]
    assert attachment.status == "pending" and attachment.expires_at is not None
    assert message.payload["attachments"][0]["telegram_file_id"] == item["file_id"]
    assert message.payload["message_text"] == ""


def test_attachment_expiry_follows_the_retention(make_bot, post_update, runtime_config):
    from agents.models import _RUNTIME_CONFIG_CACHE, RuntimeConfig

    RuntimeConfig.objects.filter(pk=runtime_config.pk).update(
        telegram_attachment_retention_seconds=3600
    )
    _RUNTIME_CONFIG_CACHE.clear()
    make_bot("alpha", "100")
    update = {
        "update_id": 3,
        "message": {"from": {"id": 5}, "chat": {"id": 5}, "document": {"file_id": "d"}},
    }
    body = post_update("100", update).json()
    attachment = MessageAttachment.objects.get(message_id=body["message_id"])
    seconds = (attachment.expires_at - attachment.created_at).total_seconds()
    assert 3590 <= seconds <= 3610


def test_media_fetch_is_a_task_after_commit(
    make_bot, post_update, tasks, no_telegram, django_capture_on_commit_callbacks
):
    make_bot("alpha", "100")
    update = {
        "update_id": 3,
        "message": {"from": {"id": 5}, "chat": {"id": 5}, "voice": {"file_id": "o1"}},
    }
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        body = post_update("100", update).json()
    assert tasks == [] and len(no_telegram.calls) == 0
    for callback in callbacks:
        callback()
    assert ("telegram.media.fetch_message_attachments", (body["message_id"],)) in tasks


def test_edited_message_and_callback_query_are_handled(make_bot, post_update):
    make_bot("alpha", "100")
    edited = {"update_id": 1, "edited_message": text_update(1, "fixed")["message"]}
    assert post_update("100", edited).json()["status"] == "enqueued"
    body = post_update("100", button_press(2, "q")).json()
    assert Message.objects.get(pk=body["message_id"]).payload["message_text"] == "button-1"
    inline = {"update_id": 3, "callback_query": {"id": "q", "from": {"id": 1}, "data": "x"}}
    assert post_update("100", inline).json()["status"] == "ignored"


def test_oversized_body_is_400(make_bot, post_update):
    make_bot("alpha", "100")
    raw = json.dumps({"update_id": 1, "pad": "x" * (webhook.MAX_BODY_BYTES + 10)}).encode()
    response = post_update("100", None, raw=raw)
    assert response.status_code == 400 and TelegramUpdate.objects.count() == 0


def test_update_id_out_of_range_is_400(make_bot, post_update):
    make_bot("alpha", "100")
    response = post_update("100", None, raw=b'{"update_id": 99999999999999999999999}')
    assert response.status_code == 400 and response.json() == {"error": "invalid_update"}


def test_database_error_while_looking_up_the_bot_is_503(make_bot, post_update, monkeypatch):
    from django.db import OperationalError

    make_bot("alpha", "100")

    def down(*args):
        raise OperationalError("server closed the connection")

    monkeypatch.setattr(webhook, "load_bot", down)
    response = post_update("100", text_update(1, "hi"))
    assert response.status_code == 503 and response.json() == {"error": "unavailable"}


def test_pairing_code_parser():
    assert ingress.pairing_code_in("/start ABC", "bot") == "ABC"
    assert ingress.pairing_code_in("  /start   ABC  ", "bot") == "ABC"
    assert ingress.pairing_code_in("/start@Bot ABC", "bot") == "ABC"
    assert ingress.pairing_code_in("/start@other ABC", "bot") is None
    assert ingress.pairing_code_in("/start", "bot") is None
    assert ingress.pairing_code_in("/start A B", "bot") is None
    assert ingress.pairing_code_in("/starter ABC", "bot") is None
    assert ingress.pairing_code_in("hello /start ABC", "bot") is None


def test_broker_down_after_commit_is_not_a_5xx(
    make_bot, post_update, monkeypatch, django_capture_on_commit_callbacks
):
    """The update is committed before the reply task is queued: a broker failure then must
    not answer 5xx (Telegram would redeliver an update we already handled)."""

    def broker_down(*args, **kwargs):
        raise ConnectionError("redis unavailable")

    monkeypatch.setattr("django_q.tasks.async_task", broker_down)
    make_bot("alpha", "100", require_telegram_binding=True)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_update("100", text_update(1, "hi"))
    assert response.status_code == 200 and response.json()["status"] == "unbound"
    assert TelegramUpdate.objects.get().outcome == "unbound"


def test_button_press_is_answered_through_a_task(
    make_bot, post_update, tasks, no_telegram, django_capture_on_commit_callbacks
):
    make_bot("alpha", "100")
    update = button_press(2, "cbq-1")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert post_update("100", update).json()["status"] == "enqueued"
    assert tasks == [] and len(no_telegram.calls) == 0
    for callback in callbacks:
        callback()
    assert ("telegram.tasks.answer_callback_query", ("alpha", "cbq-1")) in tasks
    tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert post_update("100", update).json()["status"] == "duplicate"
    assert tasks == []  # a redelivery is not answered twice


@responses.activate
def test_answer_callback_query_task(make_bot):
    from telegram.tasks import answer_callback_query
    from tests.telegram.conftest import TG

    make_bot("alpha", "100")
    responses.post(
        f"{TG}/bot100:TOKEN-alpha/answerCallbackQuery", json={"ok": True, "result": True}
    )
    assert answer_callback_query("alpha", "cbq-1") is True
    assert json.loads(responses.calls[0].request.body) == {"callback_query_id": "cbq-1"}
    assert answer_callback_query("ghost", "cbq-1") is False


def test_nul_characters_are_replaced_not_refused(make_bot, post_update):
    # PostgreSQL cannot store NUL in text or jsonb; the update must still be taken (a 5xx
    # would make Telegram redeliver it for a day) with the NUL shown as U+FFFD.
    from workers.models import Message, MessageAttachment

    make_bot("alpha", "100")
    update = text_update(1, "a\x00b")
    update["message"]["voice"] = {"file_id": "f\x00id"}
    update["message"]["\x00odd"] = ["x\x00", {"k\x00": "v\x00"}]
    response = post_update("100", update)
    assert response.status_code == 200 and response.json()["status"] == "enqueued"
    message = Message.objects.get()
    assert message.payload["message_text"].startswith("a\ufffdb")
    assert message.payload["raw_update"]["message"]["\ufffdodd"] == [
        "x\ufffd",
        {"k\ufffd": "v\ufffd"},
    ]
    assert MessageAttachment.objects.get().telegram_file_id == "f\ufffdid"
    assert TelegramUpdate.objects.get().outcome == "enqueued"


def test_body_nested_too_deep_for_the_parser_is_400(make_bot, post_update):
    make_bot("alpha", "100")
    raw = b'{"update_id": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = post_update("100", None, raw=raw)
    assert response.status_code == 400 and TelegramUpdate.objects.count() == 0


def test_body_past_the_memory_limit_is_400_not_read(make_bot, post_update, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    make_bot("alpha", "100")
    raw = json.dumps({"update_id": 1, "pad": "x" * 4096}).encode()
    response = post_update("100", None, raw=raw)
    assert response.status_code == 400 and response.json() == {"error": "invalid_update"}
    assert TelegramUpdate.objects.count() == 0


def test_a_redelivery_costs_one_query(make_bot, post_update, django_assert_num_queries):
    # The bot, its secrets and the dedupe flag come in one round trip: a redelivery storm
    # (Telegram retries for a day) costs the database nothing else.
    make_bot("alpha", "100")
    assert post_update("100", text_update(7, "hello")).json()["status"] == "enqueued"
    with django_assert_num_queries(1):
        answer = post_update("100", text_update(7, "hello")).json()
    assert answer == {"ok": True, "status": "duplicate"}


def test_a_wrong_secret_is_403_whatever_the_body(make_bot, post_update):
    # The body is parsed before the secret is checked (to share that round trip), but the
    # answer keeps SPEC §5.3's order: authentication first.
    make_bot("alpha", "100")
    valid = json.dumps(text_update(8, "hi")).encode()
    for raw in (b"not json", b"[]", b'{"update_id": "x"}', valid):
        response = post_update("100", None, secret="wrong" * 8, raw=raw)
        assert response.status_code == 403
        assert response.json() == {"error": "invalid_secret_token"}
    assert not TelegramUpdate.objects.exists() and not Message.objects.exists()
