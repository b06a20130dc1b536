"""Bot API clients for an agent's bot, and the one error the setup steps raise (SPEC §5.1).

The lowest floor of a bot's setup: ``bot_webhook`` and ``bots`` stand on it, as do the
senders (outbox, typing, media) that only need a client."""

from __future__ import annotations

from django.conf import settings

from agents.models import AgentProfile
from agents.secret_store import get_active_secret_value
from telegram.api_errors import recorder
from telegram.bot_api import TelegramClient
from telegram.models import token_ref


class TelegramSetupError(Exception):
    """An onboarding step failed; nothing was stored. Safe to show (never a token)."""


def get_agent(agent_key: str) -> AgentProfile:
    agent = AgentProfile.objects.filter(agent_key=agent_key).first()
    if agent is None:
        raise TelegramSetupError(f"Agent profile '{agent_key}' not found")
    return agent


def bot_client(token: str, subject: str = "") -> TelegramClient:
    """A Bot API client for ``token`` on the configured API (a local fake in tests); its
    errors are recorded for the admin under ``subject`` (telegram.api_errors)."""
    return TelegramClient(
        token, base_url=settings.TELEGRAM_API_BASE_URL, on_error=recorder(subject)
    )


def agent_client(agent_key: str) -> TelegramClient | None:
    """The client of the agent's bot, or None when it has no token.

    Raises ``SecretUnavailable`` when the token cannot be decrypted."""
    token = get_active_secret_value(token_ref(agent_key))
    return bot_client(token, agent_key) if token else None


def client_for(agent_key: str) -> TelegramClient:
    client = agent_client(agent_key)
    if client is None:
        raise TelegramSetupError(
            f"No Telegram token imported for agent '{agent_key}': import one first."
        )
    return client
