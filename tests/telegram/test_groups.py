"""SPEC §5.2 "Groups are never private", §5.3 step 6 (who hears "please pair") and §23
(pairing cooldown, one refusal text)."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from telegram import ingress, refusals
from telegram.models import IdentityBinding, IngressIssue, PairingCode, TelegramUpdate
from telegram.outbox_models import OutboxMessage
from telegram.pairing import create_pairing_code
from tests.telegram.conftest import bind, text_update
from workers.models import Message

GROUP = -1001234


class OutboxNotices:
    """The (chat, text) of every notice written to the outbox (SPEC §22), oldest first."""

    def _rows(self) -> list[tuple[str, str]]:
        return list(
            OutboxMessage.objects.filter(kind=OutboxMessage.NOTICE)
            .order_by("id")
            .values_list("chat_id", "text")
        )

    def __eq__(self, other) -> bool:
        return self._rows() == list(other)

    def __iter__(self):
        return iter(self._rows())

    def __len__(self) -> int:
        return len(self._rows())

    def __getitem__(self, index):
        return self._rows()[index]


@pytest.fixture
def replies(monkeypatch):
    """The notices the webhook wrote for the outbox; no sender runs."""
    monkeypatch.setattr("telegram.outbox.start_sender", lambda agent_key: None)
    return OutboxNotices()


@pytest.fixture
def post(post_update, django_capture_on_commit_callbacks):
    def send(identity: str, update: dict) -> dict:
        with django_capture_on_commit_callbacks(execute=True):
            response = post_update(identity, update)
        assert response.status_code == 200, response.content
        return response.json()

    return send


def conversation_of(body: dict) -> str:
    return Message.objects.get(pk=body["message_id"]).conversation.conversation_id


# Pairing only in a private chat ----------------------------------------------------------


@pytest.mark.parametrize("chat_type", ["group", "supergroup"])
def test_start_in_a_group_consumes_nothing_and_points_to_a_private_chat(
    make_bot, post, replies, chat_type
):
    make_bot("alpha", "100", username="AlphaBot")
    code = create_pairing_code("u1", "alpha", actor="t")
    for n, text in enumerate([f"/start@AlphaBot {code.code}", f"/start {code.code}"], 1):
        body = post("100", text_update(n, text, user=42, chat=GROUP, chat_type=chat_type))
        assert body == {"ok": True, "status": "pairing_failed", "detail": "private_chat_only"}
    assert PairingCode.objects.get().status == "pending"
    assert IdentityBinding.objects.count() == 0 and Message.objects.count() == 0
    assert replies == [(str(GROUP), refusals.PRIVATE_CHAT_ONLY_TEXT)] * 2
    assert set(TelegramUpdate.objects.values_list("detail", flat=True)) == {"private_chat_only"}
    # Not a guess at a code: it does not count towards the cooldown.
    assert not IngressIssue.objects.filter(kind="pairing_failed").exists()
    # The same code still pairs in the private chat afterwards.
    assert post("100", text_update(3, f"/start {code.code}", user=42))["status"] == "paired"


def test_a_chat_without_a_type_is_not_private(make_bot, post):
    make_bot("alpha", "100")
    code = create_pairing_code("u1", "alpha", actor="t")
    update = text_update(1, f"/start {code.code}", user=42)
    del update["message"]["chat"]["type"]
    assert post("100", update)["detail"] == "private_chat_only"
    assert PairingCode.objects.get().status == "pending"


# Group messages go to the group's conversation -------------------------------------------


def test_group_members_never_reach_a_members_private_conversation(make_bot, post, replies):
    """The leak of issue 10 item 3: a paired member's binding routed the whole group into
    their private conversation, with its history, files and replies."""
    bot = make_bot("alpha", "100", username="AlphaBot")
    code = create_pairing_code("u1", "alpha", actor="t")
    assert post("100", text_update(1, f"/start {code.code}", user=42))["status"] == "paired"
    private = post("100", text_update(2, "my secret plans", user=42))
    assert conversation_of(private) == "user-agent:alpha:u1"
    # Now the paired user and another member write in a group with the bot.
    own = post("100", text_update(3, "hi all", user=42, chat=GROUP, chat_type="supergroup"))
    other = post("100", text_update(4, "what plans?", user=77, chat=GROUP, chat_type="group"))
    for body in (own, other):
        message = Message.objects.get(pk=body["message_id"])
        assert message.conversation.conversation_id == f"telegram:100:{GROUP}"
        assert message.agent_key == "alpha"
        assert "consumer_user_id" not in message.payload["metadata"]
    # Even a binding that recorded the group as its chat routes nothing there.
    bind(bot, "u2", user="88", chat=str(GROUP))
    third = post("100", text_update(5, "me too", user=99, chat=GROUP, chat_type="group"))
    assert conversation_of(third) == f"telegram:100:{GROUP}"


def test_group_with_required_binding_admits_bound_members_only(make_bot, post, replies):
    bot = make_bot("alpha", "100", require_telegram_binding=True)
    bind(bot, "u1", user="42", chat="42")
    bound = post("100", text_update(1, "hello", user=42, chat=GROUP, chat_type="group"))
    assert bound["status"] == "enqueued"
    assert conversation_of(bound) == f"telegram:100:{GROUP}"  # still the group's
    unbound = post("100", text_update(2, "me?", user=77, chat=GROUP, chat_type="group"))
    assert unbound == {"ok": True, "status": "unbound"}
    assert replies == []  # no reply in the group
    issue = IngressIssue.objects.get(kind="unbound")
    assert (issue.telegram_user_id, issue.notified) == ("77", False)
    assert Message.objects.count() == 1


def test_please_pair_once_per_user_per_hour_in_private_chats(make_bot, post, replies):
    make_bot("alpha", "100", require_telegram_binding=True)
    # A refusal in a group first: no notice there, and it does not use up the private one.
    post("100", text_update(1, "hi", user=77, chat=GROUP, chat_type="group"))
    for n in (2, 3, 4):
        assert post("100", text_update(n, "hi", user=77))["status"] == "unbound"
    post("100", text_update(5, "hi", user=78))
    assert replies == [("77", refusals.PLEASE_PAIR_TEXT), ("78", refusals.PLEASE_PAIR_TEXT)]
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=61)):
        post("100", text_update(6, "hi", user=77))
    assert replies[-1] == ("77", refusals.PLEASE_PAIR_TEXT) and len(replies) == 3
    assert IngressIssue.objects.filter(kind="unbound").count() == 6


# Pairing cooldown and the uniform refusal --------------------------------------------------


def refusal_reasons(make_bot, post):
    """One refused /start per reason; answers the details, in order."""
    make_bot("alpha", "100")
    make_bot("beta", "200")
    used = create_pairing_code("u1", "alpha", actor="t")
    post("100", text_update(1, f"/start {used.code}", user=1))
    expired = create_pairing_code("u2", "alpha", actor="t", ttl_minutes=1)
    other_bot = create_pairing_code("u3", "beta", actor="t")
    details = [post("100", text_update(2, "/start NOPE234567", user=5))["detail"]]
    details.append(post("100", text_update(3, f"/start {used.code}", user=5))["detail"])
    with time_machine.travel(expired.expires_at + dt.timedelta(seconds=1)):
        details.append(post("100", text_update(4, f"/start {expired.code}", user=5))["detail"])
    details.append(post("100", text_update(5, f"/start {other_bot.code}", user=5))["detail"])
    return details


def test_every_refusal_tells_the_user_the_same_text(make_bot, post, replies):
    details = refusal_reasons(make_bot, post)
    assert details == ["not_found", "used", "expired", "wrong_bot"]
    refusals_sent = [text for chat, text in replies if chat == "5"]
    assert refusals_sent == [refusals.PAIRING_REFUSED_TEXT] * 4
    # The reasons stay visible to the admin.
    issues = IngressIssue.objects.filter(kind="pairing_failed", telegram_user_id="5")
    assert sorted(i.detail.split("(")[1].split(")")[0] for i in issues) == sorted(details)


def test_five_failures_an_hour_then_cooldown_without_looking_up_the_code(
    make_bot, post, replies, monkeypatch
):
    make_bot("alpha", "100")
    make_bot("beta", "200")
    for n in range(1, 6):
        body = post("100", text_update(n, f"/start WRONG{n}2345", user=5))
        assert body["detail"] == "not_found"
    code = create_pairing_code("u1", "alpha", actor="t")
    looked_up = []
    real_consume = ingress.consume_pairing_code
    monkeypatch.setattr(
        ingress,
        "consume_pairing_code",
        lambda *a, **k: looked_up.append(a) or real_consume(*a, **k),
    )
    body = post("100", text_update(6, f"/start {code.code}", user=5))
    assert body == {"ok": True, "status": "pairing_failed", "detail": "cooldown"}
    assert looked_up == [] and PairingCode.objects.get(pk=code.pk).status == "pending"
    assert IdentityBinding.objects.count() == 0
    assert TelegramUpdate.objects.get(update_id=6).detail == "cooldown"
    assert IngressIssue.objects.filter(kind="pairing_cooldown", telegram_user_id="5").count() == 1
    assert [text for _, text in replies] == [refusals.PAIRING_REFUSED_TEXT] * 6
    # Another user on this bot, and the same user on another bot, are not affected.
    other = create_pairing_code("u2", "alpha", actor="t")
    assert post("100", text_update(7, f"/start {other.code}", user=6))["status"] == "paired"
    beta = create_pairing_code("u3", "beta", actor="t")
    assert post("200", text_update(1, f"/start {beta.code}", user=5))["status"] == "paired"
    # An hour after the failures the user may try again (refusals in the cooldown do not
    # extend it).
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=61)):
        again = create_pairing_code("u4", "alpha", actor="t")
        assert post("100", text_update(8, f"/start {again.code}", user=5))["status"] == "paired"
