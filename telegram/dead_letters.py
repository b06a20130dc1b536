"""The telegram app's dead-letter sink (``AGENT_FACTORY_DEAD_LETTER_SINK``, SPEC §22): one
short apology in the chat of a message that failed for good, through the outbox."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from telegram.outbox import telegram_chat, write_rows
from telegram.outbox_models import OutboxMessage
from workers.models import Message

APOLOGY_TEXT = "Sorry, I couldn't answer your message this time. Please try again later."


def apologize(message_id: int) -> bool:
    """Queue the apology for a dead-lettered Telegram message; False when it has no chat."""
    message = Message.objects.filter(pk=message_id).only("agent_key", "payload").first()
    if message is None:
        return False
    chat_id = telegram_chat(message)
    if chat_id is None:
        return False
    try:
        with transaction.atomic():
            write_rows(
                message.agent_key,
                chat_id,
                APOLOGY_TEXT,
                kind=OutboxMessage.APOLOGY,
                job_id=message_id,
            )
    except IntegrityError:  # apologised for already (one row per job and kind)
        return False
    return True
