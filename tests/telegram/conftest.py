from __future__ import annotations

import datetime as dt
import json

import pytest
import responses
from django.test import Client
from django.utils import timezone

from agents.models import AgentProfile
from agents.secret_store import import_secret
from telegram.bots import configure_webhook, import_telegram_token
from telegram.models import Bot, IdentityBinding, PairingCode
from telegram.pairing import bind_identity
from tests.race import run_at_once

TG = "http://telegram.test"


@pytest.fixture
def tg(monkeypatch):
    """Telegram mocked by `responses`: a call nobody registered fails; retries do not sleep."""
    monkeypatch.setattr("telegram.bot_api._sleep", lambda seconds: None)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def get_me(mock, token: str, bot_id: int, username: str, status: int = 200) -> None:
    """Register Telegram's getMe answer: the bot, or (any other status) a refusal."""
    body = {
        "ok": True,
        "result": {"id": bot_id, "is_bot": True, "username": username, "first_name": username},
    }
    if status != 200:
        body = {"ok": False, "error_code": status, "description": "Unauthorized"}
    mock.post(f"{TG}/bot{token}/getMe", json=body, status=status)


@pytest.fixture
def make_bot(db):
    """An agent with an onboarded bot: token and webhook secret in the store."""

    def make(
        agent_key: str,
        identity: str,
        *,
        username: str | None = None,
        secret: str = "s" * 40,
        **agent_fields,
    ):
        agent, _ = AgentProfile.objects.get_or_create(agent_key=agent_key, defaults=agent_fields)
        import_secret(
            f"telegram.botToken.{agent_key}",
            f"{identity}:TOKEN-{agent_key}",
            actor="test",
            metadata={"bot_identity": identity},
        )
        import_secret(f"telegram.webhookSecret.{agent_key}", secret, actor="test")
        return Bot.objects.create(
            agent=agent, bot_identity=identity, username=username or f"{agent_key}_bot"
        )

    return make


@pytest.fixture
def post_update(client):
    def post(identity: str, update, *, secret: str | None = "s" * 40, raw: bytes | None = None):
        headers = {"HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN": secret} if secret is not None else {}
        body = raw if raw is not None else json.dumps(update)
        return client.post(
            f"/telegram/webhook/{identity}/", body, content_type="application/json", **headers
        )

    return post


def post_at_once(updates: list[dict], identity: str = "100") -> list[str]:
    """Post each update from its own thread and database connection, all released together
    by a barrier (real concurrency, PostgreSQL); the webhook's statuses in arrival order. An
    exception in a thread fails the caller."""

    def deliver(update: dict) -> str:
        response = Client().post(
            f"/telegram/webhook/{identity}/",
            json.dumps(update),
            content_type="application/json",
            HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN="s" * 40,
        )
        return response.json()["status"]

    return run_at_once(deliver, [(update,) for update in updates], barrier_timeout=10)


def onboard_sandbox_alpha() -> Bot:
    """Agent alpha and its bot 5151, onboarded against whatever Bot API the settings name
    (the sandbox in the callers): token imported, webhook set."""
    AgentProfile.objects.create(agent_key="alpha")
    bot = import_telegram_token("alpha", "5151:alpha-sandbox-token", actor="t").bot
    configure_webhook("alpha", actor="t")
    return bot


def text_update(
    update_id: int,
    text: str,
    *,
    user: int = 555,
    chat: int | None = None,
    chat_type: str = "private",
):
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id * 10,
            "from": {"id": user, "is_bot": False, "first_name": "U"},
            "chat": {"id": chat if chat is not None else user, "type": chat_type},
            "date": 1700000000,
            "text": text,
        },
    }


def bind(bot: Bot, consumer: str, *, user: str = "", chat: str = "") -> IdentityBinding:
    """An active binding of ``consumer`` to Telegram user/chat ids on ``bot``."""
    return bind_identity(
        consumer,
        bot.agent,
        bot_identity=bot.bot_identity,
        telegram_user_id=user,
        telegram_chat_id=chat,
        actor="t",
    )


def legacy_binding(agent: AgentProfile, consumer: str, **fields) -> IdentityBinding:
    """A pairing binding from before bot identities (no bot identity); ``fields`` override."""
    defaults = {
        "conversation_id": f"user-agent:{agent.agent_key}:{consumer}",
        "bot_identity": None,
        "source": "telegram_pairing",
    }
    return IdentityBinding.objects.create(
        consumer_user_id=consumer, agent=agent, **{**defaults, **fields}
    )


def legacy_pairing(agent: AgentProfile, consumer: str) -> PairingCode:
    """A pending pairing code from before bot identities."""
    return PairingCode.objects.create(
        code="LEGACY2345",
        consumer_user_id=consumer,
        agent=agent,
        bot_identity="",
        expires_at=timezone.now() + dt.timedelta(hours=1),
    )


# The full soft reset, as run once its dry run looked right.
SOFT_RESET_APPLY = (
    "soft_reset_telegram_bindings",
    "--apply",
    "--revoke-bindings",
    "--expire-pairings",
    "--json",
)


def soft_reset_changes(report: dict) -> tuple[int, int, int]:
    """What a soft reset changed: (revoked bindings, annotated bindings, expired codes)."""
    return report["revoked_bindings"], report["annotated_bindings"], report["expired_pairings"]
