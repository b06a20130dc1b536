"""The admin's sandbox chat (DEBUG sandbox only): chat with a sandbox bot as a Telegram user.

What you type is delivered the way Telegram would deliver it: as an update POSTed to the
webhook URL the bot registered with the (fake) Bot API, signed with the bot's current webhook
secret — so it goes through the real webhook, its checks, pairing, quotas and the queue. The
bot's replies are the ``sendMessage`` calls the sandbox stored; the page polls for them.
Both sides of a chat are ``SandboxMessage`` rows (``sender`` tells them apart), so the
transcript survives a reload. The secret never leaves the server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests
from django.conf import settings
from django.db import transaction

from agents.secret_store import get_active_secret_value
from telegram.models import Bot, SandboxMessage, SandboxWebhook, webhook_secret_ref

DEFAULT_TELEGRAM_USER = 424242  # the same pretend user as ``simulate_update``
MAX_TEXT = 4096  # Telegram's own limit on a message
MAX_TELEGRAM_USER_ID = 2**52  # Telegram: "at most 52 significant bits"
TRANSCRIPT_LIMIT = 200  # rows per poll answer; the page asks again from the last id


class SandboxChatError(Exception):
    """Bad input or a bot that cannot be chatted with; ``code`` is stable, the text is for
    the person at the page."""

    def __init__(self, code: str, detail: str, field: str | None = None):
        super().__init__(detail)
        self.code, self.detail, self.field = code, detail, field


@dataclass(frozen=True)
class ChatBot:
    bot: Bot
    webhook_url: str  # "" when the bot has no webhook in the sandbox yet


def chat_bots() -> list[ChatBot]:
    """Every bot, with the webhook URL it registered in the sandbox (two queries)."""
    hooks = dict(SandboxWebhook.objects.exclude(url="").values_list("bot_id", "url"))
    bots = Bot.objects.select_related("agent").order_by("agent__agent_key")
    return [ChatBot(bot, hooks.get(bot.bot_identity, "")) for bot in bots]


def parse_telegram_user(raw) -> int:
    try:
        user_id = int(str(raw).strip())
    except (TypeError, ValueError):
        raise SandboxChatError("invalid", "The Telegram user id must be a number.", "user")
    if not 0 < user_id < MAX_TELEGRAM_USER_ID:
        raise SandboxChatError("invalid", "The Telegram user id must be positive.", "user")
    return user_id


def find_bot(bot_identity) -> ChatBot:
    for chat_bot in chat_bots():
        if chat_bot.bot.bot_identity == str(bot_identity or ""):
            return chat_bot
    raise SandboxChatError("invalid", "Pick one of the bots listed.", "bot")


def message_json(row: SandboxMessage) -> dict:
    return {
        "id": row.pk,
        "sender": row.sender,
        "text": row.text,
        "created_at": row.created_at.isoformat(),
    }


def transcript(bot_identity: str, chat_id: int, after: int = 0) -> list[dict]:
    """The chat's messages after id ``after``, oldest first (one query)."""
    rows = SandboxMessage.objects.filter(
        bot_id=str(bot_identity), chat_id=str(chat_id), pk__gt=after
    ).order_by("pk")[:TRANSCRIPT_LIMIT]
    return [message_json(row) for row in rows]


def text_update(row: SandboxMessage, *, user_id: int) -> dict:
    """A private-chat text update, numbered by the transcript row (unique, increasing: what
    Telegram promises of update ids)."""
    return {
        "update_id": row.pk,
        "message": {
            "message_id": row.pk,
            "from": {"id": user_id, "is_bot": False, "first_name": "Sandbox user"},
            "chat": {"id": user_id, "type": "private", "first_name": "Sandbox user"},
            "date": int(row.created_at.timestamp()),
            "text": row.text,
        },
    }


def post_update(url: str, secret: str, update: dict) -> requests.Response:
    """What Telegram does with an update: POST it to the webhook with the secret header."""
    return requests.post(
        url,
        json=update,
        headers={"X-Telegram-Bot-Api-Secret-Token": secret},
        timeout=(5, 30),
    )


def send_as_user(bot_identity, telegram_user, text) -> dict:
    """Record what the user typed, deliver it to the bot's webhook, and say how the webhook
    answered: ``{"sent": <message>, "webhook": {"http_status", "answer"}}``. Raises
    SandboxChatError for bad input or a bot without a webhook or secret (nothing recorded)."""
    if not settings.AGENT_FACTORY_TELEGRAM_SANDBOX:
        raise SandboxChatError("sandbox_off", "The Telegram sandbox is switched off.")
    user_id = parse_telegram_user(telegram_user)
    text = text if isinstance(text, str) else ""
    if not text.strip():
        raise SandboxChatError("invalid", "Type a message first.", "text")
    if len(text) > MAX_TEXT:
        raise SandboxChatError("invalid", f"At most {MAX_TEXT} characters.", "text")
    chat_bot = find_bot(bot_identity)
    if not chat_bot.webhook_url:
        raise SandboxChatError(
            "no_webhook",
            "This bot has no webhook yet: configure it on the agent's onboarding page.",
            "bot",
        )
    secret = get_active_secret_value(webhook_secret_ref(chat_bot.bot.agent.agent_key))
    if not secret:
        raise SandboxChatError("no_webhook", "This bot has no webhook secret: configure it.")
    with transaction.atomic():  # committed before the webhook (another request) reads it
        row = SandboxMessage.objects.create(
            bot_id=chat_bot.bot.bot_identity,
            chat_id=str(user_id),
            sender=SandboxMessage.USER,
            text=text,
        )
    started = time.monotonic()
    try:
        response = post_update(chat_bot.webhook_url, secret, text_update(row, user_id=user_id))
    except requests.RequestException as exc:
        return {
            "sent": message_json(row),
            "webhook": {"http_status": None, "error": f"unreachable ({type(exc).__name__})"},
        }
    try:
        answer = response.json()
    except ValueError:
        answer = None
    return {
        "sent": message_json(row),
        "webhook": {
            "http_status": response.status_code,
            "answer": answer,
            "ms": round((time.monotonic() - started) * 1000),
        },
    }
