"""What the host app hears of a job (SPEC §15 event webhooks) that is not a dead letter
(``dead_letters``): its reply. Emitted inside the transaction that records the fact, so a
rolled-back change tells nobody."""

from __future__ import annotations

from agents import events
from workers.models import Message


def announce_reply(message: Message) -> None:
    """``message.replied`` for the host app (SPEC §15), in the transaction that records the
    reply: the completion of a server-delivered job, the worker's ``delivered`` otherwise."""
    metadata = (message.payload or {}).get("metadata") or {}
    events.emit(
        events.MESSAGE_REPLIED,
        agent_key=message.agent_key,
        consumer_user_id=metadata.get("consumer_user_id") or None,
        data={
            "message_id": message.pk,
            "conversation_id": message.conversation.conversation_id,
        },
    )
