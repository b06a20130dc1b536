"""The hydration bundle: everything a worker needs to run one job (SPEC §8).

Only the worker holding the live lease gets it; this is one of the two places where
plaintext secrets leave the store (the other is the server's own API clients).
"""

from __future__ import annotations

from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from agents import secret_refs as refs
from agents.errors import DomainError
from agents.models import AgentProfile, Conversation, ConversationEntry, RuntimeConfig
from agents.secret_store import decrypt_secret, get_active_secret, get_active_secret_value
from workers import leases, quotas
from workers.models import Message, MessageAttachment, Worker

HISTORY_WINDOW = 64


class AppendError(DomainError, ValueError):
    """The append was refused for a reason other than the lease; nothing was written."""


def _first_secret(refs: list[str]) -> tuple[str | None, str | None]:
    for ref in refs:
        value = get_active_secret_value(ref)
        if value is not None:
            return ref, value
    return None, None


def attachment_download_path(attachment: MessageAttachment) -> str:
    return reverse("workers:attachment-download", args=[attachment.pk])


def _configured_or_secret(config: dict, field: str, prefix: str, agent_key: str) -> str | None:
    """A plain profile value wins (even an empty one); else the scoped secret, else None."""
    if config.get(field) is not None:
        return config[field]
    return _first_secret(refs.scoped_candidates(prefix, agent_key))[1]


def build_bridge(profile: AgentProfile, bot_identity: str | None) -> dict | None:
    """The bridge block (reference queue.md §5.2): null unless the profile enables it."""
    config = profile.bridge_config or {}
    if not config.get("enabled"):
        return None
    agent_key = profile.agent_key
    key_ref, service_key = _first_secret(
        refs.service_key_candidates(agent_key, config.get("service_key_secret_ref"))
    )
    _, url_map = _first_secret(
        refs.scoped_candidates(
            refs.BRIDGE_BASE_URL_MAP_JSON, agent_key, config.get("app_base_url_map_json_secret_ref")
        )
    )
    return {
        "base_url": _configured_or_secret(config, "base_url", refs.BRIDGE_BASE_URL, agent_key),
        "app_base_url_map_json": url_map,
        "service_id": _configured_or_secret(
            config, "service_id", refs.BRIDGE_SERVICE_ID, agent_key
        ),
        "app_key": _configured_or_secret(config, "app_key", refs.BRIDGE_APP_KEY, agent_key),
        "service_key": service_key,
        "service_key_secret_ref": key_ref,
        "bot_identity": bot_identity,
    }


def build_runtime(profile: AgentProfile) -> dict:
    """The agent's runtime settings for the worker (SPEC §21), with the model key decrypted:
    the only secret a worker needs. Its keys are the handlers' contract (workers/runtime)."""
    ref = profile.api_key_secret_ref
    return {
        "handler": profile.handler,
        "model": profile.model,
        "base_url": profile.base_url,
        "api_key": get_active_secret_value(ref) if ref else None,
        "temperature": profile.temperature,
        "max_tokens": profile.max_tokens,
        "timeout_seconds": profile.timeout_seconds,
        "system_prompt": profile.system_prompt or RuntimeConfig.get_cached().system_prompt,
    }


def build_hydration_bundle(message: Message, *, base_url: str) -> dict:
    conversation = message.conversation
    profile = conversation.agent
    token_secret = get_active_secret(refs.bot_token_ref(profile.agent_key))
    bot_identity = (token_secret.metadata or {}).get("bot_identity") if token_secret else None
    history = list(
        ConversationEntry.objects.filter(conversation=conversation).order_by("-at", "-id")[
            :HISTORY_WINDOW
        ]
    )
    history.reverse()
    payload = dict(message.payload)
    attachments = []
    for attachment in message.attachments.order_by("id"):
        attachments.append(
            {
                "id": attachment.pk,
                "kind": attachment.kind,
                "status": attachment.status,
                "telegram_file_id": attachment.telegram_file_id,
                "file_name": attachment.file_name,
                "mime_type": attachment.mime_type,
                "size_bytes": attachment.size_bytes,
                "expires_at": attachment.expires_at.isoformat() if attachment.expires_at else None,
                "download_url": (
                    base_url + attachment_download_path(attachment)
                    if attachment.file and attachment.status == MessageAttachment.READY
                    else None
                ),
            }
        )
    if attachments:
        payload["attachments"] = attachments
    return {
        "message_id": message.pk,
        "conversation_id": conversation.conversation_id,
        "agent_key": message.agent_key,
        "payload": payload,
        "conversation": {
            "history": [
                {"role": e.role, "content": e.content, "at": e.at.isoformat()} for e in history
            ],
            "pending_tool_calls": conversation.pending_tool_calls,
        },
        "runtime": build_runtime(profile),
        # SPEC §8, §22: the token stays on the server unless the worker sends replies itself.
        "telegram_bot_token": (
            decrypt_secret(token_secret)
            if token_secret and profile.delivery == AgentProfile.WORKER_DELIVERY
            else None
        ),
        "bot_identity": bot_identity,
        "bridge": build_bridge(profile, bot_identity),
    }


def append_conversation_messages(
    worker: Worker, *, conversation_id: str, message_id: int, lease_id: str, messages: list[dict]
) -> int:
    """Append history entries for the job ``message_id``, fenced by its live lease.

    Returns how many entries were stored. A retried request (the same entries again, e.g.
    after a lost answer) stores nothing the second time, so a network retry never doubles
    the history; a different batch for the same job is appended after the first.
    """
    with transaction.atomic():
        now = timezone.now()
        message = (
            leases.fenced(worker, message_id, lease_id, now)
            .select_related("conversation")
            .select_for_update(of=("self",))
            .first()
        )
        if message is None:
            raise leases.LeaseLost()
        if message.conversation.conversation_id != conversation_id:
            raise AppendError("message_id does not belong to this conversation.")
        # The conversation row lock orders concurrent appends (and their retry check).
        conversation = Conversation.objects.select_for_update(no_key=True).get(
            pk=message.conversation_id
        )
        batch = [(item["role"], item["content"]) for item in messages]
        stored = list(
            ConversationEntry.objects.filter(
                conversation=conversation, source_message_id=message.pk
            )
            .order_by("id")
            .values_list("role", "content")
        )
        if len(stored) >= len(batch) and stored[len(stored) - len(batch) :] == batch:
            return 0
        # Per-job caps (SPEC §23); a retry of an accepted batch was answered just above.
        quotas.check_history(
            message.pk, [content for _, content in stored], [content for _, content in batch]
        )
        ConversationEntry.objects.bulk_create(
            ConversationEntry(
                conversation=conversation,
                role=item["role"],
                content=item["content"],
                at=item.get("at") or now,
                source_message_id=message.pk,
            )
            for item in messages
        )
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=now)
    return len(batch)
