"""django-q2 tasks of the telegram app (run after commit, never inside the webhook)."""

from __future__ import annotations

import datetime as dt
import logging

from django.utils import timezone

from agents.secret_store import SecretUnavailable
from telegram.bot_api import TelegramClient, TelegramError
from telegram.bots import agent_client
from telegram.models import IngressIssue, TelegramUpdate
from telegram.quotas import prune_sender_quotas

logger = logging.getLogger(__name__)


def _client(agent_key: str) -> TelegramClient | None:
    """A client with the agent's bot token, or None when it has none (or cannot read it)."""
    try:
        return agent_client(agent_key)
    except SecretUnavailable as exc:
        logger.error("Telegram call for agent %s skipped: %s", agent_key, exc)
        return None


def send_text(agent_key: str, chat_id: str, text: str) -> bool:
    client = _client(agent_key)
    if client is None:
        logger.warning("No token for agent %s: reply to chat %s dropped.", agent_key, chat_id)
        return False
    try:
        client.send_message(chat_id, text)
    except TelegramError as exc:
        logger.warning("Reply to chat %s failed: %s", chat_id, exc)
        return False
    return True


def answer_callback_query(agent_key: str, callback_query_id: str) -> bool:
    """Stop the button's spinner in the user's app (Telegram shows it until answered)."""
    client = _client(agent_key)
    if client is None:
        return False
    try:
        return client.answer_callback_query(callback_query_id)
    except TelegramError as exc:
        logger.info("answerCallbackQuery failed: %s", exc)
        return False


# Telegram redelivers an update for up to 24 h; keeping the dedupe rows three days (SPEC:
# at least 48 h) leaves a wide margin while the table stays bounded.
UPDATE_RETENTION_HOURS = 72


def prune_old_updates(now=None, keep_hours: int = UPDATE_RETENTION_HOURS) -> dict:
    keep_hours = max(48, keep_hours)
    cutoff = (now or timezone.now()) - dt.timedelta(hours=keep_hours)
    updates, _ = TelegramUpdate.objects.filter(received_at__lt=cutoff).delete()
    # Routing problems stay visible to admins longer than the dedupe rows.
    issues, _ = IngressIssue.objects.filter(created_at__lt=cutoff - dt.timedelta(days=27)).delete()
    buckets = prune_sender_quotas((now or timezone.now()).timestamp())
    return {"deleted_updates": updates, "deleted_issues": issues, "deleted_sender_quotas": buckets}
