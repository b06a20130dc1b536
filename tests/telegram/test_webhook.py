"""Webhook ingress: every branch of SPEC §5.3, with Telegram mocked by `responses`."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import time_machine
from django.db import DatabaseError
from django.utils import timezone

from telegram.models import IdentityBinding, IngressIssue, PairingCode, TelegramUpdate
from telegram.pairing import bind_identity, create_pairing_code
from tests.telegram.conftest import TG, legacy_binding, text_update
from workers.models import Message


@pytest.fixture
def tg(tg):
    """Telegram mocked, accepting the replies of both bots."""
    tg.post(f"{TG}/bot100:TOKEN-alpha/sendMessage", json={"ok": True, "result": {}})
    tg.post(f"{TG}/bot200:TOKEN-beta/sendMessage", json={"ok": True, "result": {}})
    return tg


def sent_texts(mock) -> list[tuple[str, dict]]:
    return [
        (call.request.url, json.loads(call.request.body))
        for call in mock.calls
        if call.request.url.endswith("/sendMessage")
    ]


def test_unknown_bot_and_bad_secret_are_403(make_bot, post_update):
    make_bot("alpha", "100")
    for identity, secret in (("999", "s" * 40), ("100", "guess"), ("100", None), ("100", "")):
        response = post_update(identity, text_update(1, "hi"), secret=secret)
        assert response.status_code == 403
        assert response.json() == {"error": "invalid_secret_token"}
    assert Message.objects.count() == 0 and TelegramUpdate.objects.count() == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1,2]",
        b'"text"',
        b'{"update_id": "7"}',
        b'{"update_id": true}',
        b"{}",
        b'{"update_id": 1.5}',
    ],
)
def test_malformed_bodies_are_400(make_bot, post_update, raw):
    make_bot("alpha", "100")
    response = post_update("100", None, raw=raw)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_update"}
    assert TelegramUpdate.objects.count() == 0


def test_text_is_enqueued_then_redelivery_is_duplicate(make_bot, post_update):
    make_bot("alpha", "100")
    response = post_update("100", text_update(7, "hello"))
    body = response.json()
    assert response.status_code == 200 and body["status"] == "enqueued"
    message = Message.objects.get(pk=body["message_id"])
    assert message.conversation.conversation_id == "telegram:100:555"
    assert message.payload["message_text"] == "hello"
    assert message.payload["metadata"]["telegram_chat_id"] == "555"
    again = post_update("100", text_update(7, "hello"))
    assert again.json() == {"ok": True, "status": "duplicate"}
    assert Message.objects.count() == 1


def test_ignored_updates_are_recorded(make_bot, post_update):
    make_bot("alpha", "100")
    for update in (
        {"update_id": 1, "channel_post": {"text": "x"}},
        {"update_id": 2, "message": {"text": "no sender", "chat": {"id": 1}}},
        {"update_id": 3, "message": {"from": {"id": 1}, "chat": {"id": 1}, "sticker": {}}},
    ):
        assert post_update("100", update).json() == {"ok": True, "status": "ignored"}
    assert post_update("100", {"update_id": 1, "channel_post": {}}).json()["status"] == "duplicate"
    assert Message.objects.count() == 0


def test_caption_and_largest_photo(make_bot, post_update):
    make_bot("alpha", "100")
    update = {
        "update_id": 9,
        "message": {
            "message_id": 1,
            "from": {"id": 5},
            "chat": {"id": 5},
            "caption": "look",
            "photo": [
                {"file_id": "small", "width": 90, "height": 90, "file_size": 10},
                {"file_id": "big", "width": 1280, "height": 960, "file_size": 900},
                {"file_id": "mid", "width": 320, "height": 240, "file_size": 100},
            ],
        },
    }
    body = post_update("100", update).json()
    message = Message.objects.get(pk=body["message_id"])
    assert message.payload["message_text"] == "look"
    attachment = message.attachments.get()
    assert attachment.kind == "photo" and attachment.telegram_file_id == "big"
    assert attachment.status == "pending"
    assert message.scheduled_for > timezone.now()  # held until the file is fetched


def test_require_binding_answers_unbound_and_replies(
    make_bot, post_update, tg, django_capture_on_commit_callbacks
):
    make_bot("alpha", "100", require_telegram_binding=True)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_update("100", text_update(3, "hi"))
    assert response.json() == {"ok": True, "status": "unbound"}
    assert Message.objects.count() == 0
    assert IngressIssue.objects.get().kind == "unbound"
    [(url, body)] = sent_texts(tg)
    assert body["chat_id"] == "555" and "pair" in body["text"].lower()


def test_disabled_agent_is_unroutable(make_bot, post_update):
    make_bot("alpha", "100", enabled=False)
    assert post_update("100", text_update(4, "hi")).json() == {"ok": True, "status": "unroutable"}
    assert IngressIssue.objects.get().kind == "unroutable"
    assert Message.objects.count() == 0


def test_start_code_pairs_and_routes_to_user_conversation(
    make_bot, post_update, tg, django_capture_on_commit_callbacks
):
    make_bot("alpha", "100", require_telegram_binding=True)
    code = create_pairing_code("user-42", "alpha", actor="test")
    with django_capture_on_commit_callbacks(execute=True):
        response = post_update("100", text_update(1, f"/start {code.code}"))
    assert response.json() == {"ok": True, "status": "paired"}
    binding = IdentityBinding.objects.get(status="active")
    assert binding.conversation_id == "user-agent:alpha:user-42"
    assert binding.bot_identity == "100" and binding.telegram_user_id == "555"
    assert binding.source == "telegram_pairing"
    assert "paired" in sent_texts(tg)[0][1]["text"]
    body = post_update("100", text_update(2, "now talk")).json()
    assert Message.objects.get(pk=body["message_id"]).conversation.conversation_id == (
        "user-agent:alpha:user-42"
    )


def test_code_for_bot_a_fails_on_bot_b(make_bot, post_update):
    make_bot("alpha", "100")
    make_bot("beta", "200")
    code = create_pairing_code("user-1", "alpha", actor="test")
    body = post_update("200", text_update(1, f"/start {code.code}")).json()
    assert body == {
        "ok": True,
        "status": "pairing_failed",
        "detail": "wrong_bot",
    }
    assert IdentityBinding.objects.count() == 0
    assert PairingCode.objects.get().status == "pending"


def test_expired_code_reports_expired_on_every_retry(make_bot, post_update):
    make_bot("alpha", "100")
    code = create_pairing_code("user-1", "alpha", actor="test", ttl_minutes=1)
    with time_machine.travel(code.expires_at, tick=False):
        first = post_update("100", text_update(1, f"/start {code.code}")).json()
    assert first["detail"] == "expired"
    assert PairingCode.objects.get().status == "expired"
    for update_id in (2, 3):
        retry = post_update("100", text_update(update_id, f"/start {code.code}")).json()
        assert retry == {"ok": True, "status": "pairing_failed", "detail": "expired"}
    assert PairingCode.objects.get().status == "expired"
    unknown = post_update("100", text_update(4, "/start NOPE234567")).json()
    assert unknown["detail"] == "not_found"


def test_same_telegram_user_on_two_bots_routes_to_each_agent(make_bot, post_update):
    make_bot("alpha", "100")
    make_bot("beta", "200")
    a = post_update("100", text_update(1, "to alpha", user=777)).json()
    b = post_update("200", text_update(1, "to beta", user=777)).json()
    assert Message.objects.get(pk=a["message_id"]).agent_key == "alpha"
    assert Message.objects.get(pk=b["message_id"]).agent_key == "beta"
    assert (
        Message.objects.get(pk=a["message_id"]).conversation.conversation_id == "telegram:100:777"
    )


def test_legacy_binding_without_bot_never_matches(make_bot, post_update):
    bot = make_bot("alpha", "100")
    legacy_binding(bot.agent, "old", telegram_user_id="555")
    body = post_update("100", text_update(1, "hi")).json()
    assert Message.objects.get(pk=body["message_id"]).conversation.conversation_id == (
        "telegram:100:555"
    )


def test_new_binding_revokes_colliding_ones(make_bot):
    bot = make_bot("alpha", "100")
    first = bind_identity("u1", bot.agent, bot_identity="100", telegram_user_id="9", actor="t")
    second = bind_identity("u2", bot.agent, bot_identity="100", telegram_user_id="9", actor="t")
    first.refresh_from_db()
    assert first.status == "revoked" and second.status == "active"


def test_previous_secret_accepted_only_during_grace(make_bot, post_update):
    from agents.secret_store import import_secret
    from telegram.models import Bot

    make_bot("alpha", "100")
    import_secret("telegram.webhookSecret.alpha", "n" * 40, actor="t")
    until = timezone.now() + dt.timedelta(minutes=10)
    Bot.objects.filter(bot_identity="100").update(previous_secret_valid_until=until)
    assert post_update("100", text_update(1, "a"), secret="s" * 40).status_code == 200
    assert post_update("100", text_update(2, "b"), secret="n" * 40).status_code == 200
    with time_machine.travel(until, tick=False):
        assert post_update("100", text_update(3, "c"), secret="s" * 40).status_code == 403
        assert post_update("100", text_update(4, "d"), secret="n" * 40).status_code == 200


def test_database_unavailable_is_503(make_bot, post_update, monkeypatch):
    make_bot("alpha", "100")
    from telegram import webhook

    def broken(*args, **kwargs):
        raise DatabaseError("connection refused")

    monkeypatch.setattr(webhook.ingress, "route", broken)
    response = post_update("100", text_update(1, "hi"))
    assert response.status_code == 503 and response.json() == {"error": "unavailable"}
