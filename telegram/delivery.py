"""``AGENT_FACTORY_DELIVERY_SINK`` (SPEC §22): how ``workers`` hands a Telegram job's reply
to the outbox and says that a worker took the job (the typing indicator).

Above ``outbox`` and ``typing``, so neither needs the other: the sink is the one place that
joins them."""

from __future__ import annotations

import datetime as dt

from telegram import typing
from telegram.formatting import MARKDOWN
from telegram.outbox import telegram_chat, write_rows
from telegram.outbox_models import OutboxMessage


class TelegramDeliverySink:
    """``AGENT_FACTORY_DELIVERY_SINK``: a completed job's reply becomes outbox rows."""

    @staticmethod
    def write_reply(message, reply: dict, now: dt.datetime) -> list[int]:
        chat_id = telegram_chat(message)
        text = (reply or {}).get("text") or ""
        media = (reply or {}).get("media") or []
        if chat_id is None or not (text.strip() or media):
            return []  # not a Telegram conversation: the reply lives in the history only
        return write_rows(
            message.agent_key,
            chat_id,
            text,
            text_format=reply.get("format") or MARKDOWN,
            job_id=message.pk,
            buttons=reply.get("buttons"),
            media=media,
            now=now,
        )

    @staticmethod
    def job_claimed(message) -> None:
        typing.job_claimed(message)

    @staticmethod
    def reply_ids(message_id: int) -> list[int]:
        return list(
            OutboxMessage.objects.filter(job_id=message_id, kind=OutboxMessage.REPLY)
            .order_by("part")
            .values_list("pk", flat=True)
        )


DELIVERY_SINK = TelegramDeliverySink()
