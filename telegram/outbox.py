"""Writing to the outbox (SPEC §22): a reply's rows (written by ``telegram.delivery``, the
sink ``workers`` calls inside a job's completion transaction), the notices the server itself
sends (apologies, pairing answers), and failed rows sent again. Rows are sent by
``telegram.outbox_sender`` after commit, with a schedule as the safety net."""

from __future__ import annotations

import datetime as dt
import logging
import threading

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_q.tasks import async_task

from agents import delivery_rows
from agents.audit import record_audit
from telegram import outbox_sender
from telegram.formatting import PLAIN
from telegram.outbox_media import layout
from telegram.outbox_models import OutboxMessage

logger = logging.getLogger(__name__)


def telegram_chat(message) -> str | None:
    """The chat a job's reply goes to, or None when the job did not come from Telegram."""
    payload = message.payload or {}
    chat_id = (payload.get("metadata") or {}).get("telegram_chat_id")
    if payload.get("provider") != "telegram" or not chat_id:
        return None
    return str(chat_id)


def reply_markup(buttons: list | None) -> dict | None:
    if not buttons:
        return None
    return {"inline_keyboard": [[dict(button) for button in row] for row in buttons if row]}


def write_rows(
    agent_key: str,
    chat_id: str,
    text: str,
    *,
    text_format: str = PLAIN,
    kind: str = OutboxMessage.REPLY,
    job_id: int | None = None,
    buttons: list | None = None,
    media: list[dict] | None = None,
    now: dt.datetime | None = None,
    conversation=None,
) -> list[int]:
    """Outbox rows for one text and its files (one per Telegram message after splitting,
    ``outbox_media.layout``); the sender is started once the caller's transaction commits."""
    parts = layout(text, text_format, media or [])
    if not parts:
        return []
    markup = reply_markup(buttons)
    extra = {"created_at": now, "next_attempt_at": now} if now else {}
    rows = OutboxMessage.objects.bulk_create(
        OutboxMessage(
            agent_key=agent_key,
            chat_id=chat_id,
            job_id=job_id,
            conversation=conversation,
            kind=kind,
            part=index,
            parts=len(parts),
            text=part.text if part else "",
            parse_mode=part.parse_mode if part else "",
            plain_text=part.plain_text if part else "",
            reply_markup=markup if index == len(parts) - 1 else None,
            media_kind=item.get("kind", ""),
            media_upload_id=item.get("upload_id"),
            **extra,
        )
        for index, (part, item) in enumerate(parts)
    )
    ids = [row.pk for row in rows]
    if None in ids:  # backends that do not return ids from bulk_create
        ids = list(
            OutboxMessage.objects.filter(job_id=job_id, kind=kind).values_list("pk", flat=True)
            if job_id
            else []
        )
    transaction.on_commit(lambda: start_sender(agent_key), robust=True)
    return ids


def start_sender(agent_key: str) -> None:
    """Have a sender drain this bot's rows; the schedule catches whatever it misses.

    ``AGENT_FACTORY_OUTBOX_SENDER = "thread"`` sends from a thread of this process at once
    (no task-queue pickup delay on the reply path); ``"task"`` hands it to django-q2.
    """
    if getattr(settings, "AGENT_FACTORY_OUTBOX_SENDER", "task") == "thread":
        threading.Thread(
            target=_drain_in_thread, args=(agent_key,), name="outbox-sender", daemon=True
        ).start()
        return
    async_task("telegram.outbox_sender.drain_bot", agent_key, task_name="telegram-outbox")


def _drain_in_thread(agent_key: str) -> None:
    try:
        outbox_sender.drain_bot(agent_key)
    except Exception:  # the schedule retries; a thread must not die loudly mid-request
        logger.exception("Outbox sender for agent %s stopped.", agent_key)
    finally:
        connection.close()


def send_notice(agent_key: str, chat_id: str, text: str) -> list[int]:
    """A short server notice (pairing answer, refusal) through the outbox, in order with the
    chat's replies."""
    with transaction.atomic():
        return write_rows(agent_key, str(chat_id), text, kind=OutboxMessage.NOTICE)


def retry_rows(row_ids, *, actor: str) -> int:
    """Send failed rows again (admin action): attempts reset, audited, sender started."""
    with transaction.atomic():
        ids = delivery_rows.reset_failed(OutboxMessage, row_ids, timezone.now())
        bots = set(OutboxMessage.objects.filter(pk__in=ids).values_list("agent_key", flat=True))
        if ids:
            record_audit(actor, "telegram.outbox_retry", None, row_ids=ids, count=len(ids))
        for agent_key in bots:
            transaction.on_commit(lambda key=agent_key: start_sender(key), robust=True)
    return len(ids)
