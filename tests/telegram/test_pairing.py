"""Every rule of SPEC §5.2: codes, TTL clamp, consume order, 1 user → 1 bot, resolution."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from agents.models import AgentProfile, AuditEvent, Conversation
from telegram import pairing
from telegram.models import IdentityBinding, PairingCode
from telegram.pairing import (
    PairingError,
    bind_identity,
    consume_pairing_code,
    create_pairing_code,
    resolve_binding,
)
from tests.telegram.conftest import bind, legacy_pairing, text_update
from workers.models import Message


def consume(code, bot="100", user="42", chat="42"):
    return consume_pairing_code(
        code, bot_identity=bot, telegram_user_id=user, telegram_chat_id=chat
    )


def test_codes_come_from_secrets_with_the_unambiguous_alphabet(make_bot, monkeypatch):
    make_bot("alpha", "100")
    draws = []

    def choice(alphabet):
        draws.append(alphabet)
        return alphabet[len(draws) % len(alphabet)]

    monkeypatch.setattr(pairing.secrets, "choice", choice)
    code = create_pairing_code("u1", "alpha", actor="t").code
    assert len(code) == 10 and len(draws) == 10
    assert set(draws) == {"ABCDEFGHJKMNPQRSTUVWXYZ23456789"}
    monkeypatch.undo()
    codes = {pairing.new_code() for _ in range(200)}
    assert len(codes) == 200
    assert set("".join(codes)) <= set("ABCDEFGHJKMNPQRSTUVWXYZ23456789")
    assert not set("".join(codes)) & set("01OIL")


def test_code_collision_draws_again(make_bot, monkeypatch):
    make_bot("alpha", "100")
    first = create_pairing_code("u1", "alpha", actor="t").code
    draws = iter([first, "ZZZZZZZZZZ"])
    monkeypatch.setattr(pairing, "new_code", lambda: next(draws))
    assert create_pairing_code("u2", "alpha", actor="t").code == "ZZZZZZZZZZ"


@pytest.mark.parametrize(
    "ttl,minutes", [(None, 15), (0, 1), (-5, 1), (1, 1), (90, 90), (10_000, 24 * 60)]
)
def test_ttl_is_clamped(make_bot, ttl, minutes):
    make_bot("alpha", "100")
    code = create_pairing_code("u1", "alpha", actor="t", ttl_minutes=ttl)
    assert code.expires_at - code.created_at == dt.timedelta(minutes=minutes)
    assert code.status == "pending" and code.bot_identity == "100"
    assert code.used_at is None and not code.telegram_user_id and not code.telegram_chat_id


@pytest.mark.parametrize("ttl", ["15", 1.5, True])
def test_ttl_of_the_wrong_type_is_refused(make_bot, ttl):
    make_bot("alpha", "100")
    with pytest.raises(PairingError, match="whole number"):
        create_pairing_code("u1", "alpha", actor="t", ttl_minutes=ttl)
    assert PairingCode.objects.count() == 0


def test_creation_needs_an_enabled_agent_with_a_bot(db, make_bot):
    with pytest.raises(PairingError, match="'ghost' not found or disabled"):
        create_pairing_code("u1", "ghost", actor="t")
    AgentProfile.objects.create(agent_key="nobot")
    with pytest.raises(PairingError, match="import its token first"):
        create_pairing_code("u1", "nobot", actor="t")
    bot = make_bot("alpha", "100")
    pending = create_pairing_code("u1", "alpha", actor="t")
    AgentProfile.objects.filter(pk=bot.agent.pk).update(enabled=False)
    with pytest.raises(PairingError, match="not found or disabled"):
        create_pairing_code("u1", "alpha", actor="t")
    assert PairingCode.objects.get(pk=pending.pk).status == "pending"  # untouched
    with pytest.raises(PairingError, match="consumer_user_id"):
        create_pairing_code("   ", "alpha", actor="t")


def test_new_code_expires_only_the_same_users_earlier_codes_for_that_agent(make_bot):
    make_bot("alpha", "100")
    make_bot("beta", "200")
    a1 = create_pairing_code("u1", "alpha", actor="t")
    b1 = create_pairing_code("u1", "beta", actor="t")
    other = create_pairing_code("u2", "alpha", actor="t")
    a2 = create_pairing_code("u1", "alpha", actor="t")
    status = dict(PairingCode.objects.values_list("pk", "status"))
    assert status == {a1.pk: "expired", b1.pk: "pending", other.pk: "pending", a2.pk: "pending"}
    with pytest.raises(PairingError, match="^Pairing code expired$"):  # superseded
        consume(a1.code)
    assert AuditEvent.objects.filter(action="telegram.create_pairing_code").count() == 4


def test_deep_link_uses_the_bot_username():
    assert pairing.deep_link("AlphaBot", "ABC") == "https://t.me/AlphaBot?start=ABC"


def test_consume_checks_in_order_and_persists_expiry(make_bot):
    make_bot("alpha", "100")
    make_bot("beta", "200")
    # 1. not found (wins over everything else)
    with pytest.raises(PairingError, match="^Pairing code not found$"):
        consume("NOSUCHCODE", bot="200")
    # 3 before 4: an expired code on the wrong bot reports expired, and is persisted so.
    code = create_pairing_code("u1", "alpha", actor="t", ttl_minutes=1)
    with (
        time_machine.travel(code.expires_at + dt.timedelta(seconds=1), tick=False),
        pytest.raises(PairingError, match="^Pairing code expired$"),
    ):
        consume(code.code, bot="200")
    assert PairingCode.objects.get(pk=code.pk).status == "expired"
    # 2 before 4: stored expired, every retry on any bot still says "expired", and nothing
    # flips it back to pending.
    for bot in ("100", "200", "200"):
        with pytest.raises(PairingError, match="^Pairing code expired$"):
            consume(code.code, bot=bot)
        assert PairingCode.objects.get(pk=code.pk).status == "expired"
    # 4. wrong bot: nothing written, the code stays pending and works on its own bot.
    fresh = create_pairing_code("u1", "alpha", actor="t")
    with pytest.raises(PairingError, match="^Pairing code belongs to a different Telegram bot$"):
        consume(fresh.code, bot="200")
    assert PairingCode.objects.get(pk=fresh.pk).status == "pending"
    assert IdentityBinding.objects.count() == 0
    binding = consume(fresh.code.lower(), bot="100")
    assert binding.source == "telegram_pairing" and binding.bot_identity == "100"
    used = PairingCode.objects.get(pk=fresh.pk)
    assert used.status == "used" and used.used_at is not None
    assert (used.telegram_user_id, used.telegram_chat_id) == ("42", "42")
    # 2. a used code, on its own bot or another (not pending wins over wrong bot)
    for bot in ("100", "200"):
        with pytest.raises(PairingError, match="^Pairing code already used$"):
            consume(fresh.code, bot=bot)
    # ... and over expired: a used code past its expiry is still "already used", and stays used.
    with (
        time_machine.travel(used.expires_at + dt.timedelta(hours=1), tick=False),
        pytest.raises(PairingError, match="^Pairing code already used$"),
    ):
        consume(fresh.code)
    assert PairingCode.objects.get(pk=fresh.pk).status == "used"


def test_exactly_at_expiry_is_expired(make_bot):
    make_bot("alpha", "100")
    code = create_pairing_code("u1", "alpha", actor="t")
    with (
        time_machine.travel(code.expires_at, tick=False),
        pytest.raises(PairingError, match="^Pairing code expired$"),
    ):
        consume(code.code)


def test_legacy_code_without_bot_identity_is_refused(make_bot):
    bot = make_bot("alpha", "100")
    legacy_pairing(bot.agent, "u1")
    with pytest.raises(PairingError, match="different Telegram bot"):
        consume("LEGACY2345")
    assert IdentityBinding.objects.count() == 0


def test_one_consumer_has_one_active_binding(make_bot):
    make_bot("alpha", "100")
    make_bot("beta", "200")
    consume(create_pairing_code("u1", "alpha", actor="t").code, bot="100")
    consume(create_pairing_code("u1", "beta", actor="t").code, bot="200", user="43")
    rows = {b.agent.agent_key: b for b in IdentityBinding.objects.filter(consumer_user_id="u1")}
    assert rows["alpha"].status == "revoked" and rows["alpha"].revoked_at is not None
    assert rows["beta"].status == "active"


def test_telegram_user_or_chat_moves_to_the_newest_consumer_on_one_bot(make_bot):
    bot = make_bot("alpha", "100")
    first = bind(bot, "u1", user="42", chat="900")
    second = consume(create_pairing_code("u2", "alpha", actor="t").code, user="42", chat="42")
    assert IdentityBinding.objects.get(pk=first.pk).status == "revoked"
    assert resolve_binding("100", "42").consumer_user_id == "u2"
    # A chat collision revokes too: u3 pairs from user 77 in u2's chat 42.
    third = consume(create_pairing_code("u3", "alpha", actor="t").code, user="77", chat="42")
    assert IdentityBinding.objects.get(pk=second.pk).status == "revoked"
    assert IdentityBinding.objects.get(pk=third.pk).status == "active"


def test_same_telegram_user_on_two_bots_stays_two_bindings(make_bot):
    make_bot("alpha", "100")
    make_bot("beta", "200")
    consume(create_pairing_code("u1", "alpha", actor="t").code, bot="100")
    consume(create_pairing_code("u2", "beta", actor="t").code, bot="200")
    assert IdentityBinding.objects.filter(status="active", telegram_user_id="42").count() == 2
    assert resolve_binding("100", "42").consumer_user_id == "u1"
    assert resolve_binding("200", "42").consumer_user_id == "u2"
    assert resolve_binding("300", "42") is None


def test_resolution_is_by_bot_and_telegram_user_only(make_bot):
    # SPEC §5.2: no chat fallback. Another user in the bound user's chat matches nothing.
    bot = make_bot("alpha", "100")
    bind(bot, "chat-owner", user="1", chat="900")
    bind(bot, "user-owner", user="2", chat="5")
    assert resolve_binding("100", "2").consumer_user_id == "user-owner"
    assert resolve_binding("100", "1").consumer_user_id == "chat-owner"
    assert resolve_binding("100", "3") is None
    assert resolve_binding("100", "") is None
    assert resolve_binding("", "1") is None


def test_conversation_id_survives_re_pairing(make_bot, post_update):
    make_bot("alpha", "100")
    first = create_pairing_code("u1", "alpha", actor="t")
    post_update("100", text_update(1, f"/start {first.code}", user=42))
    one = post_update("100", text_update(2, "first", user=42)).json()
    # Re-pairing (say from a new Telegram account) keeps the user's conversation.
    again = create_pairing_code("u1", "alpha", actor="t")
    assert (
        post_update("100", text_update(3, f"/start {again.code}", user=43)).json()["status"]
        == "paired"
    )
    two = post_update("100", text_update(4, "second", user=43)).json()
    conv_one = Message.objects.get(pk=one["message_id"]).conversation
    conv_two = Message.objects.get(pk=two["message_id"]).conversation
    assert conv_one.pk == conv_two.pk
    assert conv_one.conversation_id == "user-agent:alpha:u1"
    assert Conversation.objects.count() == 1
    # The old Telegram account is no longer bound (1 consumer → 1 active binding).
    assert resolve_binding("100", "42") is None


def test_bind_audits_and_revoke_is_idempotent(make_bot):
    bot = make_bot("alpha", "100")
    binding = bind_identity("u1", bot.agent, bot_identity="100", telegram_user_id="1", actor="t")
    assert AuditEvent.objects.filter(action="telegram.bind").exists()
    assert pairing.revoke_binding(binding, actor="admin") is True
    assert pairing.revoke_binding(binding, actor="admin") is False
    assert AuditEvent.objects.filter(action="telegram.revoke_binding").count() == 1
