from __future__ import annotations

import json

import pytest

from agents.models import AgentProfile
from agents.secret_store import import_secret
from telegram.models import Bot

TG = "http://telegram.test"


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


def text_update(update_id: int, text: str, *, user: int = 555, chat: int | None = None):
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id * 10,
            "from": {"id": user, "is_bot": False, "first_name": "U"},
            "chat": {"id": chat if chat is not None else user, "type": "private"},
            "date": 1700000000,
            "text": text,
        },
    }
