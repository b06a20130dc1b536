"""The hydration bundle: everything a worker needs to run one job (SPEC §8).

Only the worker holding the live lease gets it; this is one of the two places where
plaintext secrets leave the store (the other is the server's own API clients).
"""

from __future__ import annotations

from django.urls import reverse

from agents.models import AgentProfile, ConversationEntry
from agents.secret_store import get_active_secret, get_active_secret_value
from workers.models import Message, MessageAttachment

HISTORY_WINDOW = 64


def bot_token_ref(agent_key: str) -> str:
    return f"telegram.botToken.{agent_key}"


def service_key_candidates(agent_key: str, preferred_ref: str | None) -> list[str]:
    """Service key lookup order: the profile's ref, the per-agent ref, the global ref."""
    refs = [preferred_ref] if preferred_ref else []
    refs += [f"agent-bridge.serviceKey.{agent_key}", "agent-bridge.serviceKey"]
    return list(dict.fromkeys(refs))


def _first_secret(refs: list[str]) -> tuple[str | None, str | None]:
    for ref in refs:
        value = get_active_secret_value(ref)
        if value is not None:
            return ref, value
    return None, None


def attachment_download_path(attachment: MessageAttachment) -> str:
    return reverse("workers:attachment-download", args=[attachment.pk])


def build_bridge(profile: AgentProfile, bot_identity: str | None) -> dict | None:
    config = profile.bridge_config or {}
    if not config.get("enabled"):
        return None
    key_ref, service_key = _first_secret(
        service_key_candidates(profile.agent_key, config.get("service_key_secret_ref"))
    )
    map_ref = config.get("app_base_url_map_json_secret_ref") or (
        f"agent-bridge.appBaseUrlMapJson.{profile.agent_key}"
    )
    return {
        "base_url": config.get("base_url"),
        "app_base_url_map_json": get_active_secret_value(map_ref),
        "service_id": config.get("service_id"),
        "app_key": config.get("app_key"),
        "service_key": service_key,
        "service_key_secret_ref": key_ref,
        "bot_identity": bot_identity,
    }


def build_hydration_bundle(message: Message, *, base_url: str) -> dict:
    conversation = message.conversation
    profile = conversation.agent
    token_secret = get_active_secret(bot_token_ref(profile.agent_key))
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
        "telegram_bot_token": get_active_secret_value(bot_token_ref(profile.agent_key)),
        "bot_identity": bot_identity,
        "bridge": build_bridge(profile, bot_identity),
    }
