"""The telegram app's dead-letter sink (``AGENT_FACTORY_DEAD_LETTER_SINK``, SPEC §22): one
short apology in the chat of a message that failed for good, through the async reply path."""

from __future__ import annotations

from django_q.tasks import async_task

from workers.models import Message

APOLOGY_TEXT = "Sorry, I couldn't answer your message this time. Please try again later."


def apologize(message_id: int) -> bool:
    """Queue the apology for a dead-lettered Telegram message; False when it has no chat."""
    message = Message.objects.filter(pk=message_id).only("agent_key", "payload").first()
    if message is None:
        return False
    payload = message.payload or {}
    chat_id = (payload.get("metadata") or {}).get("telegram_chat_id")
    if payload.get("provider") != "telegram" or not chat_id:
        return False
    async_task(
        "telegram.tasks.send_text",
        message.agent_key,
        str(chat_id),
        APOLOGY_TEXT,
        task_name="telegram-apology",
    )
    return True
