"""Enqueue: the one door into the message queue (SPEC §6.1), and the admin's way back in
for dead letters (SPEC §6.3).

The webhook, the consumer API, pushing and broadcasts all call ``enqueue_message``; there is
no second path. Claim and lease fencing live in ``leases``, sweeps in ``sweep``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agents.audit import record_audit
from agents.models import AgentProfile, Conversation, RuntimeConfig
from workers import claim_wait, sql, triggers
from workers.models import Message, MessageAttachment

PAYLOAD_KEYS = {
    "provider",
    "provider_user_id",
    "message_text",
    "external_message_id",
    "raw_update",
    "metadata",
    "attachments",
}
ATTACHMENT_KINDS = {"photo", "video", "audio", "voice", "document"}
MAX_MESSAGE_TEXT = 100_000


class EnqueueError(ValueError):
    """The message was refused; nothing was written. The text is safe to show to callers."""


@dataclass(frozen=True)
class EnqueueResult:
    message: Message
    conversation_created: bool


def _as_json(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return "invalid"


def _validate_payload(payload: Any) -> dict:
    if not isinstance(payload, dict):
        raise EnqueueError("payload must be a JSON object.")
    unknown = sorted(set(payload) - PAYLOAD_KEYS)
    if unknown:
        raise EnqueueError(f"payload has unknown field(s): {', '.join(unknown)}.")
    provider = payload.get("provider")
    if not isinstance(provider, str) or not provider.strip():
        raise EnqueueError("payload.provider is required.")
    provider_user_id = payload.get("provider_user_id")
    if not isinstance(provider_user_id, str) or not provider_user_id.strip():
        # The upstream wording (reference queue.md §5.1), with the value shown as JSON.
        raise EnqueueError(
            "provider_user_id is required but missing in "
            f"payload.provider_user_id={_as_json(provider_user_id)}"
        )
    message_text = payload.get("message_text", "")
    if not isinstance(message_text, str):
        raise EnqueueError("payload.message_text must be a string.")
    if len(message_text) > MAX_MESSAGE_TEXT:
        raise EnqueueError(f"payload.message_text is longer than {MAX_MESSAGE_TEXT} characters.")
    metadata = payload.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise EnqueueError("payload.metadata must be an object.")
    attachments = payload.get("attachments")
    attachments = [] if attachments is None else attachments
    if not isinstance(attachments, list):
        raise EnqueueError("payload.attachments must be a list.")
    for index, attachment in enumerate(attachments):
        if not isinstance(attachment, dict) or attachment.get("kind") not in ATTACHMENT_KINDS:
            raise EnqueueError(
                f"payload.attachments[{index}].kind must be one of "
                f"{', '.join(sorted(ATTACHMENT_KINDS))}."
            )
        _validate_attachment_fields(index, attachment)
    external_id = payload.get("external_message_id")
    if external_id is not None and not isinstance(external_id, str):
        raise EnqueueError("payload.external_message_id must be a string.")
    return payload


def _validate_attachment_fields(index: int, attachment: dict) -> None:
    where = f"payload.attachments[{index}]"
    for key in ("telegram_file_id", "file_name", "mime_type"):
        if not isinstance(attachment.get(key, ""), str):
            raise EnqueueError(f"{where}.{key} must be a string.")
    size = attachment.get("size_bytes")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise EnqueueError(f"{where}.size_bytes must be a non-negative integer.")
    status = attachment.get("status", MessageAttachment.READY)
    if status not in {MessageAttachment.READY, MessageAttachment.PENDING}:
        raise EnqueueError(f"{where}.status must be ready or pending.")
    expires_at = attachment.get("expires_at")
    if expires_at is not None:
        if isinstance(expires_at, str):
            expires_at = parse_datetime(expires_at)
        if not isinstance(expires_at, dt.datetime) or timezone.is_naive(expires_at):
            raise EnqueueError(f"{where}.expires_at must be a timezone-aware ISO-8601 time.")


def enqueue_message(
    *,
    conversation_id: str,
    agent_key: str,
    payload: dict,
    priority: int | None = None,
    scheduled_for: dt.datetime | None = None,
    max_attempts: int | None = None,
    agent: AgentProfile | None = None,
) -> EnqueueResult:
    """Validate and insert one queue row (and its conversation, if new) atomically.

    Runs inside the caller's transaction when there is one (the webhook records the update
    in the same transaction), so a failure anywhere leaves nothing behind. A reconcile is
    requested after commit.
    """
    prepared = prepare_enqueue(
        conversation_id=conversation_id,
        agent_key=agent_key,
        payload=payload,
        priority=priority,
        scheduled_for=scheduled_for,
        max_attempts=max_attempts,
        agent=agent,
    )
    return insert_prepared(prepared)


@dataclass(frozen=True)
class PreparedEnqueue:
    """An enqueue that passed every check that needs no conversation: what to write.

    ``insert_prepared`` writes it; the webhook's one-statement path (``telegram.sql``)
    writes the same rows from it.
    """

    conversation_id: str
    agent: AgentProfile
    payload: dict  # as stored
    priority: int
    scheduled_for: dt.datetime
    max_attempts: int
    now: dt.datetime

    @property
    def attachments(self) -> list[dict]:
        return self.payload.get("attachments") or []

    def new_message(self, conversation_pk: int | None) -> Message:
        return Message(
            conversation_id=conversation_pk,
            agent_key=self.agent.agent_key,
            payload=self.payload,
            priority=self.priority,
            scheduled_for=self.scheduled_for,
            max_attempts=self.max_attempts,
            created_at=self.now,
        )


def prepare_enqueue(
    *,
    conversation_id: str,
    agent_key: str,
    payload: dict,
    priority: int | None = None,
    scheduled_for: dt.datetime | None = None,
    max_attempts: int | None = None,
    agent: AgentProfile | None = None,
) -> PreparedEnqueue:
    """``enqueue_message``'s checks (raising ``EnqueueError``) up to the conversation; writes
    nothing. Reads the agent only when ``agent`` is not it."""
    if not isinstance(conversation_id, str) or not conversation_id.strip():
        raise EnqueueError("conversation_id is required.")
    if len(conversation_id) > 255:
        raise EnqueueError("conversation_id is longer than 255 characters.")
    payload = _validate_payload(payload)
    if priority is None:
        priority = 50
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise EnqueueError("priority must be an integer between 0 and 100.")
    priority = min(100, max(0, priority))
    config = RuntimeConfig.get_cached()
    if max_attempts is None:
        max_attempts = config.max_attempts
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
        raise EnqueueError("max_attempts must be an integer of at least 1.")
    now = timezone.now()
    if scheduled_for is not None and timezone.is_naive(scheduled_for):
        raise EnqueueError("scheduled_for must be timezone-aware.")

    # Refusals happen before anything is written, so a caller's transaction stays usable.
    if agent is None or agent.agent_key != agent_key:
        agent = AgentProfile.objects.filter(agent_key=agent_key, enabled=True).first()
    if agent is None or not agent.enabled:
        raise EnqueueError(f"Agent profile '{agent_key}' not found or disabled")
    provider_user_id = payload["provider_user_id"].strip()
    # The user's text as sent: the system prompt reaches the handler in the hydration's
    # ``runtime.system_prompt`` (SPEC §6.1 revision 2), not glued onto the message.
    stored_payload = {
        **payload,
        "message_text": payload.get("message_text", ""),
        "provider_user_id": provider_user_id,
        "metadata": {**(payload.get("metadata") or {}), "provider_user_id": provider_user_id},
    }
    return PreparedEnqueue(
        conversation_id=conversation_id,
        agent=agent,
        payload=stored_payload,
        priority=priority,
        scheduled_for=scheduled_for or now,
        max_attempts=max_attempts,
        now=now,
    )


def insert_prepared(prepared: PreparedEnqueue) -> EnqueueResult:
    """Write a prepared enqueue: its conversation if new, the queue row, its attachments,
    and the reconcile request after commit. Raises ``EnqueueError`` (nothing written) when
    the conversation belongs to another agent."""
    conversation_id, agent = prepared.conversation_id, prepared.agent
    existing = sql.conversation_key(conversation_id)
    if existing is not None and existing[1] != agent.pk:
        raise agent_mismatch(conversation_id, agent.agent_key)
    # No savepoint of our own inside a caller's transaction (the webhook's): an error past
    # this point aborts the whole transaction, which is what the caller wants.
    with transaction.atomic(savepoint=False):
        created = False
        if existing is not None:
            conversation_pk = existing[0]
        else:
            conversation, created = Conversation.objects.get_or_create(
                conversation_id=conversation_id, defaults={"agent": agent}
            )
            if conversation.agent_id != agent.pk:  # created concurrently for another agent
                raise agent_mismatch(conversation_id, agent.agent_key)
            conversation_pk = conversation.pk
        message = prepared.new_message(conversation_pk)
        message.save(force_insert=True)
        for attachment in prepared.attachments:
            MessageAttachment.objects.create(
                message=message,
                kind=attachment["kind"],
                status=attachment.get("status", MessageAttachment.READY),
                telegram_file_id=attachment.get("telegram_file_id", ""),
                file_name=attachment.get("file_name", "")[:255],
                mime_type=attachment.get("mime_type", "")[:100],
                size_bytes=attachment.get("size_bytes"),
                expires_at=attachment.get("expires_at"),
            )
        request_reconcile_after_commit()
    return EnqueueResult(message=message, conversation_created=created)


def request_reconcile_after_commit() -> None:
    """What every enqueue asks once its transaction commits: wake the long-polling claims
    (SPEC §7) and a (coalesced) reconcile. Called by every path that inserts a queue row,
    the webhook's raw-SQL ones included, so no model signal is relied on."""
    transaction.on_commit(claim_wait.notify_new_work, robust=True)
    transaction.on_commit(triggers.request_reconcile)


def agent_mismatch(conversation_id: str, agent_key: str) -> EnqueueError:
    """The refusal of an enqueue into a conversation that belongs to another agent."""
    owner = (
        Conversation.objects.filter(conversation_id=conversation_id)
        .values_list("agent__agent_key", flat=True)
        .first()
    )
    return EnqueueError(
        f"Conversation '{conversation_id}' is already bound to agent "
        f"'{owner}', cannot enqueue for '{agent_key}'."
    )


def requeue_dead_letters(message_ids, *, actor: str) -> int:
    """Give dead-lettered messages a fresh start (attempts reset); audited."""
    with transaction.atomic():
        now = timezone.now()
        ids = list(
            Message.objects.select_for_update()
            .filter(pk__in=message_ids, status=Message.DEAD_LETTER)
            .values_list("pk", flat=True)
        )
        Message.objects.filter(pk__in=ids).update(
            status=Message.QUEUED,
            attempts=0,
            scheduled_for=now,
            dead_lettered_at=None,
            next_retry_at=None,
            claimed_by="",
            lease_id="",
            lease_expires_at=None,
        )
        if ids:
            record_audit(actor, "queue.requeue_dead_letters", None, message_ids=ids, count=len(ids))
    if ids:
        transaction.on_commit(triggers.request_reconcile)
    return len(ids)
