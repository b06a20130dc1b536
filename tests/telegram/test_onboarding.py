"""Bot onboarding through the commands (same services as the admin), Telegram mocked."""

from __future__ import annotations

import io
import json
import logging

import pytest
import responses
from django.core.management import CommandError, call_command

from agents.models import AgentProfile, AuditEvent, Secret
from agents.secret_store import get_active_secret_value
from telegram.bot_api import TelegramClient, split_message
from telegram.models import Bot, IdentityBinding, PairingCode
from tests.telegram.conftest import (
    SOFT_RESET_APPLY,
    TG,
    get_me,
    legacy_binding,
    legacy_pairing,
    soft_reset_changes,
)

TOKEN = "100:AAAA-secret-token"
OTHER = "200:BBBB-other-token"


def run(*args, stdin: str | None = None, monkeypatch=None):
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def agent(db):
    return AgentProfile.objects.create(agent_key="alpha")


@responses.activate
def test_import_token_stores_identity_and_secret(agent, monkeypatch):
    get_me(responses, TOKEN, 100, "alpha_bot")
    out, _ = run("import_telegram_token", "alpha", "--json", stdin=TOKEN, monkeypatch=monkeypatch)
    data = json.loads(out)
    assert data["bot_identity"] == "100" and data["username"] == "alpha_bot"
    assert get_active_secret_value("telegram.botToken.alpha") == TOKEN
    assert Bot.objects.get().bot_identity == "100"
    assert TOKEN not in out
    assert AuditEvent.objects.filter(action="telegram.import_token").exists()


@responses.activate
def test_import_refuses_bad_token_and_stores_nothing(agent, monkeypatch):
    get_me(responses, TOKEN, 0, "", status=401)
    with pytest.raises(CommandError) as exc:
        run("import_telegram_token", "alpha", stdin=TOKEN, monkeypatch=monkeypatch)
    assert "Telegram rejected the token" in str(exc.value)
    assert TOKEN not in str(exc.value)
    assert Secret.objects.count() == 0 and Bot.objects.count() == 0


def test_import_refuses_empty_stdin(agent, monkeypatch):
    with pytest.raises(CommandError, match="No token on stdin"):
        run("import_telegram_token", "alpha", stdin="  \n", monkeypatch=monkeypatch)


@responses.activate
def test_one_bot_one_agent(agent, monkeypatch):
    AgentProfile.objects.create(agent_key="beta")
    get_me(responses, TOKEN, 100, "alpha_bot")
    run("import_telegram_token", "alpha", stdin=TOKEN, monkeypatch=monkeypatch)
    with pytest.raises(CommandError, match="already assigned to agent 'alpha'"):
        run("import_telegram_token", "beta", stdin=TOKEN, monkeypatch=monkeypatch)
    assert not Secret.objects.filter(secret_ref="telegram.botToken.beta").exists()


@responses.activate
def test_different_bot_needs_replace_flag(agent, monkeypatch):
    get_me(responses, TOKEN, 100, "alpha_bot")
    get_me(responses, OTHER, 200, "other_bot")
    run("import_telegram_token", "alpha", stdin=TOKEN, monkeypatch=monkeypatch)
    IdentityBinding.objects.create(
        consumer_user_id="u",
        agent=agent,
        conversation_id="c",
        bot_identity="100",
        source="telegram_pairing",
    )
    with pytest.raises(CommandError, match="--replace-bot"):
        run("import_telegram_token", "alpha", stdin=OTHER, monkeypatch=monkeypatch)
    assert Bot.objects.get().bot_identity == "100"
    out, _ = run(
        "import_telegram_token",
        "alpha",
        "--replace-bot",
        "--json",
        stdin=OTHER,
        monkeypatch=monkeypatch,
    )
    assert json.loads(out)["revoked_bindings"] == 1
    assert Bot.objects.get().bot_identity == "200"
    assert IdentityBinding.objects.get().status == "revoked"


@responses.activate
def test_configure_webhook_sets_secret_and_verifies(agent, monkeypatch):
    get_me(responses, TOKEN, 100, "alpha_bot")
    run("import_telegram_token", "alpha", stdin=TOKEN, monkeypatch=monkeypatch)
    url = "https://factory.test/telegram/webhook/100/"
    responses.post(
        f"{TG}/bot{TOKEN}/getWebhookInfo",
        json={"ok": True, "result": {"url": "https://elsewhere.example/hook"}},
    )
    responses.post(f"{TG}/bot{TOKEN}/setWebhook", json={"ok": True, "result": True})
    responses.post(f"{TG}/bot{TOKEN}/getWebhookInfo", json={"ok": True, "result": {"url": url}})
    out, err = run("configure_telegram_webhook", "alpha", "--json")
    data = json.loads(out)
    assert data["verified"] is True and data["webhook_url"] == url
    assert "another URL" in err
    set_call = [c for c in responses.calls if c.request.url.endswith("/setWebhook")][0]
    body = json.loads(set_call.request.body)
    secret = get_active_secret_value("telegram.webhookSecret.alpha")
    assert body["secret_token"] == secret and len(secret) >= 32
    assert set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
    assert body["allowed_updates"] == ["message", "edited_message", "callback_query"]
    assert secret not in out and secret not in err
    status, _ = run("agent_status", "alpha", "--json")
    assert json.loads(status)["next_action"] == "ready"


def test_agent_status_next_action_import_token(agent):
    out, _ = run("agent_status", "alpha", "--json")
    data = json.loads(out)
    assert data["next_action"] == "import_token"
    assert data["items"]["token_imported"] == {"ok": False, "reason": "no bot token imported"}


def test_pairing_code_command_and_clamp(make_bot):
    make_bot("alpha", "100", username="alpha_bot")
    out, _ = run("create_pairing_code", "user-1", "alpha", "--json", "--ttl-minutes", "100000")
    data = json.loads(out)
    assert data["deep_link"] == f"https://t.me/alpha_bot?start={data['code']}"
    assert len(data["code"]) == 10 and set(data["code"]) <= set("ABCDEFGHJKMNPQRSTUVWXYZ23456789")
    code = PairingCode.objects.get(code=data["code"])
    assert (code.expires_at - code.created_at).total_seconds() == 24 * 3600
    out2, _ = run("create_pairing_code", "user-1", "alpha", "--json")
    assert PairingCode.objects.get(code=data["code"]).status == "expired"
    assert PairingCode.objects.get(code=json.loads(out2)["code"]).status == "pending"


def test_pairing_code_needs_bot(agent):
    with pytest.raises(CommandError, match="import its token first"):
        run("create_pairing_code", "user-1", "alpha")
    assert PairingCode.objects.count() == 0


def test_soft_reset_dry_run_then_idempotent_apply(make_bot):
    bot = make_bot("alpha", "100")
    AgentProfile.objects.create(agent_key="nobot")
    legacy_binding(bot.agent, "u1")
    legacy_binding(bot.agent, "u2", bot_identity="", source="manual")  # not a pairing: kept
    legacy_pairing(bot.agent, "u3")
    out, _ = run("soft_reset_telegram_bindings", "--json")
    dry = json.loads(out)
    assert dry["legacy_bindings_missing_bot_identity"] == 1
    assert dry["pending_pairings_missing_bot_identity"] == 1
    assert dry["profiles_missing_bot_identity"] == 1
    assert (
        dry["revoked_bindings"] == 0
        and IdentityBinding.objects.filter(status="revoked").count() == 0
    )
    out, _ = run(*SOFT_RESET_APPLY)
    applied = json.loads(out)
    assert applied["revoked_bindings"] == 1 and applied["expired_pairings"] == 1
    binding = IdentityBinding.objects.get(consumer_user_id="u1")
    assert binding.status == "revoked"
    assert binding.metadata["soft_reset_reason"] == "missing_bot_identity"
    out, _ = run(*SOFT_RESET_APPLY)
    again = json.loads(out)
    assert soft_reset_changes(again) == (0, 0, 0)


# Client ------------------------------------------------------------------------------


def test_split_message_limits():
    text = ("word " * 2000).strip()
    parts = split_message(text)
    assert all(len(p) <= 4096 for p in parts) and "".join(parts).replace(" ", "") == text.replace(
        " ", ""
    )
    assert split_message("x" * 9000) == ["x" * 4096, "x" * 4096, "x" * 808]


@responses.activate
def test_client_honours_429_and_retries_5xx_and_hides_token(caplog):
    sleeps = []
    url = f"{TG}/bot{TOKEN}/sendMessage"
    responses.post(
        url,
        status=429,
        json={
            "ok": False,
            "error_code": 429,
            "description": "slow",
            "parameters": {"retry_after": 3},
        },
    )
    responses.post(url, status=502, body="bad gateway")
    responses.post(url, json={"ok": True, "result": {"message_id": 1}})
    caplog.set_level(logging.DEBUG)
    client = TelegramClient(TOKEN, base_url=TG, sleep=sleeps.append)
    assert client.send_message(1, "hi") == [{"message_id": 1}]
    assert sleeps[0] == 3
    responses.post(
        f"{TG}/bot{TOKEN}/getMe",
        status=401,
        json={"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    with pytest.raises(Exception) as exc:
        client.get_me()
    assert TOKEN not in str(exc.value) and TOKEN not in repr(client)
    assert TOKEN not in caplog.text
