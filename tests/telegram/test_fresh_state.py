"""SPEC §5.3, last paragraph: a change an admin makes to a bot or its agent applies from the
very next update, in every process — no cache may answer a security question stale."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from agents.models import AgentProfile, Secret
from agents.secret_store import import_secret
from telegram import bots
from telegram.models import Bot
from telegram.webhook import load_bot
from tests.telegram.conftest import TG, get_me, text_update


def configure_agent(*argv: str) -> None:
    call_command("configure_agent", "alpha", *argv, stdout=io.StringIO())


def status(post_update, update_id: int, identity: str = "100", **kwargs) -> str:
    response = post_update(identity, text_update(update_id, "hi", **kwargs))
    return response.json().get("status") if response.status_code == 200 else response.status_code


def test_disabling_the_agent_applies_to_the_next_update(make_bot, post_update):
    make_bot("alpha", "100")
    assert status(post_update, 1) == "enqueued"
    configure_agent("--disable")
    assert status(post_update, 2) == "unroutable"
    configure_agent("--enable")
    assert status(post_update, 3) == "enqueued"


def test_requiring_a_binding_applies_to_the_next_update(make_bot, post_update):
    make_bot("alpha", "100")
    assert status(post_update, 1) == "enqueued"
    configure_agent("--require-telegram-binding")
    assert status(post_update, 2) == "unbound"
    configure_agent("--no-require-telegram-binding")
    assert status(post_update, 3) == "enqueued"


def test_a_replaced_bot_is_refused_from_the_next_update(make_bot, post_update, tg):
    make_bot("alpha", "100")
    assert status(post_update, 1) == "enqueued"
    get_me(tg, "200:NEW", 200, "new_bot")
    tg.post(f"{TG}/bot100:TOKEN-alpha/deleteWebhook", json={"ok": True, "result": True})
    bots.import_telegram_token("alpha", "200:NEW", actor="t", replace_bot=True)
    assert status(post_update, 2) == 403
    assert status(post_update, 3, identity="200") == "enqueued"


def test_a_secret_replaced_without_grace_is_refused_from_the_next_update(make_bot, post_update):
    make_bot("alpha", "100", secret="old-" * 10)
    assert post_update("100", text_update(1, "hi"), secret="old-" * 10).status_code == 200
    import_secret("telegram.webhookSecret.alpha", "new-" * 10, actor="t")  # no grace period
    assert post_update("100", text_update(2, "hi"), secret="old-" * 10).status_code == 403
    assert post_update("100", text_update(3, "hi"), secret="new-" * 10).status_code == 200


@pytest.mark.parametrize("identity", ["100", "nope"])
def test_load_bot_reads_what_the_orm_reads(make_bot, identity):
    bot = make_bot("alpha", "100", bridge_config={"enabled": True, "x": [1, "é"]})
    Bot.objects.filter(pk=bot.pk).update(
        webhook_info={"url": "https://x.test", "pending_update_count": 3},
        webhook_verified=True,
    )
    AgentProfile.objects.filter(pk=bot.agent_id).update(require_telegram_binding=True)
    expected = Bot.objects.select_related("agent").filter(bot_identity=identity).first()
    found = load_bot(identity)
    if expected is None:
        assert found is None
        return
    loaded = found.bot
    # The secret rows come along: newest first, the two newest only.
    import_secret("telegram.webhookSecret.alpha", "t" * 40, actor="t")
    import_secret("telegram.webhookSecret.alpha", "u" * 40, actor="t")
    rows = load_bot(identity).secret_rows
    assert [(active) for _, active, _ in rows] == [True, False]
    assert [pk for pk, _, _ in rows] == list(
        Secret.objects.filter(secret_ref="telegram.webhookSecret.alpha")
        .order_by("-version")
        .values_list("pk", flat=True)[:2]
    )
    fields = [f.attname for f in Bot._meta.concrete_fields]
    assert [getattr(loaded, f) for f in fields] == [getattr(expected, f) for f in fields]
    agent_fields = [f.attname for f in AgentProfile._meta.concrete_fields]
    assert [getattr(loaded.agent, f) for f in agent_fields] == [
        getattr(expected.agent, f) for f in agent_fields
    ]
    assert loaded.agent.bridge_config == {"enabled": True, "x": [1, "é"]}
    assert loaded.webhook_info["pending_update_count"] == 3 and loaded.webhook_verified is True
