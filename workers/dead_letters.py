"""Telling the user when their message failed for good (SPEC §22): a job that dead-letters
gets one short apology in its chat — never the error text, never twice.

``workers`` does not know the channels: the apology is sent by the callable named in the
``AGENT_FACTORY_DEAD_LETTER_SINK`` setting (the telegram app's), called after commit with
the message id. Until the server-side outbox exists that sink uses the async reply path.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from agents import events
from workers.models import Message

logger = logging.getLogger(__name__)


def dead_lettered(message_ids, now) -> list[int]:
    """Everything that follows a job's dead letter, inside the dead-lettering transaction:
    the ``message.dead_lettered`` event for the host app (SPEC §15) and the apology."""
    if events.host_event.has_listeners():
        rows = Message.objects.filter(pk__in=list(message_ids)).values(
            "pk", "agent_key", "payload", "attempts", "conversation__conversation_id"
        )
        for row in rows:
            metadata = (row["payload"] or {}).get("metadata") or {}
            events.emit(
                events.MESSAGE_DEAD_LETTERED,
                agent_key=row["agent_key"],
                consumer_user_id=metadata.get("consumer_user_id") or None,
                data={
                    "message_id": row["pk"],
                    "conversation_id": row["conversation__conversation_id"],
                    "attempts": row["attempts"],
                },
            )
    return apologize_after_commit(message_ids, now)


def apologize_after_commit(message_ids, now) -> list[int]:
    """Mark the dead-lettered messages as apologised for and have the sink tell their users
    once the caller's transaction commits. Call inside the dead-lettering transaction.

    A message whose reply already reached the user (dead-lettered after delivery) or that
    was apologised for before (requeued from the admin, dead again) gets nothing.
    """
    pending = Message.objects.filter(
        pk__in=list(message_ids),
        status=Message.DEAD_LETTER,
        apologized_at__isnull=True,
        delivered_at__isnull=True,
    )
    ids = list(pending.values_list("pk", flat=True))
    if not ids:
        return []
    Message.objects.filter(pk__in=ids).update(apologized_at=now)
    transaction.on_commit(lambda: _notify(ids), robust=True)
    return ids


def _notify(message_ids: list[int]) -> None:
    path = getattr(settings, "AGENT_FACTORY_DEAD_LETTER_SINK", "")
    if not path:
        return
    sink = import_string(path)
    for message_id in message_ids:
        try:
            sink(message_id)
        except Exception:  # one chat's failure must not keep the others from their apology
            logger.exception("Apology for dead-lettered message %s not sent.", message_id)
