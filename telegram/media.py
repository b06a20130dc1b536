"""Telegram media: fetched by a task before the message becomes claimable.

The webhook enqueues a message with media held back (``scheduled_for`` in the future) and
its attachments ``pending``. This task calls getFile, downloads each file (≤ 20 MB, the Bot
API's own limit) into Django storage, then releases the message at once — also when a
download fails: the attachment is marked failed with the reason, and the agent still gets
the text. Attachments expire after the runtime config's retention.
"""

from __future__ import annotations

import datetime as dt
import logging
import os

from django.core.exceptions import SuspiciousOperation
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone
from django.utils.text import get_valid_filename

from agents.secret_store import SecretUnavailable
from telegram.bot_api import TelegramError
from telegram.bots import agent_client
from workers.models import Message, MessageAttachment

logger = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024


def fetch_message_attachments(message_id: int) -> dict:
    message = Message.objects.filter(pk=message_id).first()
    if message is None:
        return {"fetched": 0, "failed": 0}
    try:
        client = agent_client(message.agent_key)
    except SecretUnavailable as exc:  # the files fail like with no token; the message goes on
        logger.error("Attachments of message %s not fetched: %s", message_id, exc)
        client = None
    fetched = failed = 0
    for attachment in message.attachments.filter(status=MessageAttachment.PENDING):
        try:
            if client is None:
                raise TelegramError("no bot token")
            _refuse_oversized(attachment.size_bytes)  # as the update announced it: do not ask
            info = client.get_file(attachment.telegram_file_id)
            path = info.get("file_path")
            if not isinstance(path, str) or not path:
                raise TelegramError("getFile returned no file_path")
            _refuse_oversized(info.get("file_size"))
            data = client.download_file(path, MAX_DOWNLOAD_BYTES)
            attachment.file.save(
                _safe_name(attachment.file_name, path), ContentFile(data), save=False
            )
            MessageAttachment.objects.filter(pk=attachment.pk).update(
                file=attachment.file.name, status=MessageAttachment.READY, size_bytes=len(data)
            )
            fetched += 1
        except (TelegramError, OSError, SuspiciousOperation, ValueError, TypeError) as exc:
            # Whatever goes wrong with one file, the message is still released below.
            MessageAttachment.objects.filter(pk=attachment.pk).update(
                status=MessageAttachment.FAILED, error=str(exc)[:1000]
            )
            failed += 1
    release_message(message)
    return {"fetched": fetched, "failed": failed}


def _refuse_oversized(size) -> None:
    # The Bot API serves files up to 20 MB only.
    if (size or 0) > MAX_DOWNLOAD_BYTES:
        raise TelegramError(f"file larger than {MAX_DOWNLOAD_BYTES} bytes")


def _safe_name(file_name: str, file_path: str) -> str:
    """A plain file name: the sender chooses ``file_name``, so no directories in it."""
    name = os.path.basename((file_name or "").replace("\\", "/")) or os.path.basename(file_path)
    name = get_valid_filename(name) if name.strip(". ") else ""
    return name[:100] or "file"


def release_message(message: Message) -> None:
    """Make a held-back message claimable now (if it is still waiting)."""
    now = timezone.now()
    with transaction.atomic():
        Message.objects.filter(pk=message.pk, status=Message.QUEUED, scheduled_for__gt=now).update(
            scheduled_for=now
        )
    from workers.triggers import request_reconcile

    request_reconcile()


def expire_old_attachments(now: dt.datetime | None = None) -> dict:
    now = now or timezone.now()
    expired = files = 0
    for attachment in MessageAttachment.objects.filter(expires_at__lte=now).exclude(
        status=MessageAttachment.EXPIRED
    )[:1000]:
        if attachment.file:
            attachment.file.delete(save=False)
            files += 1
        MessageAttachment.objects.filter(pk=attachment.pk).update(
            status=MessageAttachment.EXPIRED, file=""
        )
        expired += 1
    return {"expired": expired, "files_deleted": files}
