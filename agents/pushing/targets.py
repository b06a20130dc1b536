"""Who a push reaches: active identity bindings, read in bulk (one query per call, whatever
the number of users), turned into target fields and queue payloads."""

from __future__ import annotations

from agents.models import AgentProfile
from telegram.models import IdentityBinding

TARGET_FIELDS = [
    "tenant_id",
    "consumer_user_id",
    "agent_id",
    "conversation_id",
    "telegram_user_id",
    "telegram_chat_id",
    "bot_identity",
]


def bindings_of_users(users) -> dict[tuple[int, str], dict]:
    """The active binding of each ``(tenant id, consumer user id)`` (at most one per user of
    a tenant: SPEC §5.2, §15), as target fields. Keyed by both: two tenants' users with the
    same id are two people."""
    users = set(users)
    rows = IdentityBinding.objects.filter(
        status=IdentityBinding.ACTIVE,
        tenant_id__in={tenant for tenant, _ in users},
        consumer_user_id__in={user for _, user in users},
    ).values(*_binding_columns())
    found = {(row["tenant_id"], row["consumer_user_id"]): _as_target(row) for row in rows}
    return {key: value for key, value in found.items() if key in users}


def bindings_of_agents(agent_ids) -> list[dict]:
    """Every active binding of these agents (enabled ones only), as target fields."""
    rows = (
        IdentityBinding.objects.filter(
            status=IdentityBinding.ACTIVE, agent_id__in=set(agent_ids), agent__enabled=True
        )
        .order_by("agent_id", "consumer_user_id")
        .values(*_binding_columns())
    )
    return [_as_target(row) for row in rows]


def _binding_columns() -> list[str]:
    return list(TARGET_FIELDS)


def _as_target(row: dict) -> dict:
    return {**row, "bot_identity": row["bot_identity"] or ""}


def payload_for(target, text: str, metadata: dict) -> dict:
    """The queue payload of one push: a Telegram chat when the binding has one (the agent's
    reply goes there), otherwise a system push answered into the history only."""
    meta = {**metadata, "consumer_user_id": target.consumer_user_id}
    if target.telegram_chat_id:
        meta.update(
            telegram_chat_id=target.telegram_chat_id,
            bot_identity=target.bot_identity,
        )
        if target.telegram_user_id:
            meta["telegram_user_id"] = target.telegram_user_id
        provider = "telegram"
        provider_user_id = target.telegram_user_id or target.telegram_chat_id
    else:
        provider, provider_user_id = "system_push", target.consumer_user_id
    return {
        "provider": provider,
        "provider_user_id": provider_user_id,
        "message_text": text,
        "metadata": meta,
    }


def agents_by_id(agent_ids) -> dict[int, AgentProfile]:
    return AgentProfile.objects.in_bulk(set(agent_ids) - {None})
