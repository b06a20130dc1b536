"""Completing a job with its reply (SPEC §6.3, §7, §22): one transaction marks the job done,
appends its history, records usage and writes the reply's outbox rows.

``workers`` does not know the channels: the rows are written by the **delivery sink** the
``AGENT_FACTORY_DELIVERY_SINK`` setting names (the telegram app's), an object with
``write_reply(message, reply, now) -> [ids]`` (called inside the transaction, so the rows
exist exactly when the job is done; the reply's ``media`` name ``ReplyUpload`` ids already
checked and attached to the job) and ``reply_ids(message_id) -> [ids]`` (the answer to a
repeated complete).
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from agents.errors import DomainError
from agents.models import AgentProfile
from workers import leases
from workers.hydration import append_conversation_messages
from workers.job_events import announce_reply
from workers.models import Message, Worker
from workers.reply_uploads import attach_reply_media
from workers.tokens import Landed


class ReplyNotExpected(DomainError):
    code = "reply_not_expected"
    default_detail = (
        "This agent's worker sends its replies itself (delivery: worker); complete without 'reply'."
    )


def delivery_sink():
    path = getattr(settings, "AGENT_FACTORY_DELIVERY_SINK", "")
    return import_string(path) if path else None


def job_claimed(message: Message) -> None:
    """Tell the channel a job started (Telegram shows "typing…" until it ends, SPEC §22)."""
    sink = delivery_sink()
    if sink is not None and hasattr(sink, "job_claimed"):
        sink.job_claimed(message)


def _first_answer(worker: Worker, message_id: int, lease_id: str) -> list[int] | None:
    """The outbox ids of a job this worker already completed with this lease, else None."""
    done = Message.objects.filter(
        pk=message_id, status=Message.DONE, claimed_by=worker.worker_id, lease_id=lease_id
    ).exists()
    if not done or not lease_id:
        return None
    sink = delivery_sink()
    return list(sink.reply_ids(message_id)) if sink else []


def complete_by_token(
    token,
    message_id: int,
    lease_id: str,
    *,
    reply: dict | None = None,
    history: list[dict] | None = None,
    usage: dict | None = None,
) -> Landed | None:
    """``complete_with_reply`` for the worker owning ``token``, in one statement with its
    authentication, when the job ends with nothing but its lease (a worker that sent its
    reply itself): the usual answer (no outbox rows) when it landed. None otherwise, having
    written nothing: the caller then authenticates and ``complete_with_reply`` answers
    (a repeated complete, a lost lease, a reply)."""
    if reply or history or usage:
        return None
    landed = leases.complete_by_token(token, message_id, lease_id)
    return Landed(landed.worker_id, []) if landed else None


def complete_with_reply(
    worker: Worker,
    message_id: int,
    lease_id: str,
    *,
    reply: dict | None = None,
    history: list[dict] | None = None,
    usage: dict | None = None,
) -> list[int]:
    """Complete the job; returns the outbox ids of its reply (the same ids when repeated)."""
    if not reply and not history:
        # A worker that sent its reply itself (delivery: worker): the fenced finish alone,
        # one statement (bench/claim_throughput.py); a repeat answers the first answer.
        try:
            leases.complete_job(worker, message_id, lease_id, usage)
        except leases.LeaseLost:
            previous = _first_answer(worker, message_id, lease_id)
            if previous is None:
                raise
            return previous
        return []
    with transaction.atomic():
        now = timezone.now()
        message = (
            leases.fenced(worker, message_id, lease_id, now)
            .select_related("conversation__agent")
            .first()
        )
        if message is None:
            previous = _first_answer(worker, message_id, lease_id)
            if previous is not None:
                return previous
            raise leases.LeaseLost()
        if reply and message.conversation.agent.delivery == AgentProfile.WORKER_DELIVERY:
            raise ReplyNotExpected()
        if reply and reply.get("media"):
            # Before anything is written: a bad reference is a 400 that changes nothing.
            attach_reply_media(message, lease_id, reply["media"])
        if history:
            append_conversation_messages(
                worker,
                conversation_id=message.conversation.conversation_id,
                message_id=message_id,
                lease_id=lease_id,
                messages=history,
            )
        leases.complete_job(worker, message_id, lease_id, usage)
        if reply:
            announce_reply(message)
        sink = delivery_sink()
        if not reply or sink is None:
            return []
        return list(sink.write_reply(message, reply, now))
