"""django-q2 tasks of the telegram app (run after commit, never inside the webhook)."""

from __future__ import annotations

import logging

from agents.secret_store import get_active_secret_value
from telegram.client import TelegramClient, TelegramError
from telegram.models import token_ref

logger = logging.getLogger(__name__)


def send_text(agent_key: str, chat_id: str, text: str) -> bool:
    token = get_active_secret_value(token_ref(agent_key))
    if not token:
        logger.warning("No token for agent %s: reply to chat %s dropped.", agent_key, chat_id)
        return False
    try:
        TelegramClient(token).send_message(chat_id, text)
    except TelegramError as exc:
        logger.warning("Reply to chat %s failed: %s", chat_id, exc)
        return False
    return True
