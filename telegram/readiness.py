"""Readiness of an agent's Telegram setup: a checklist and the next step (SPEC §5.1 item 5)."""

from __future__ import annotations

from django.utils import timezone

from agents.models import RuntimeConfig
from agents.runtime_settings import model_key_status
from agents.secret_store import has_active_secret
from telegram.bots import get_agent
from telegram.models import Bot, IdentityBinding, PairingCode, token_ref


def readiness(agent_key: str) -> dict:
    agent = get_agent(agent_key)
    bot = Bot.objects.filter(agent=agent).first()
    config = RuntimeConfig.get()
    token = has_active_secret(token_ref(agent_key))
    missing = [ref for ref in agent.secrets_ref if not has_active_secret(ref)]
    provider_ok = config.provider_kind != "fly" or bool(config.app_name and config.image)
    items = {
        "token_imported": (token, "token stored" if token else "no bot token imported"),
        "bot_identity_known": (
            bool(bot),
            f"bot {bot.bot_identity} (@{bot.username})" if bot else "run getMe first",
        ),
        "webhook_verified": (
            bool(bot and bot.webhook_verified),
            "getWebhookInfo matches" if bot and bot.webhook_verified else "webhook not set",
        ),
        "provider_configured": (
            provider_ok,
            f"provider '{config.provider_kind}'"
            + ("" if provider_ok else ": Fly needs app name and image"),
        ),
        "required_secrets_present": (
            not missing,
            "all present" if not missing else f"missing: {', '.join(missing)}",
        ),
        "agent_enabled": (agent.enabled, "enabled" if agent.enabled else "agent disabled"),
        "model_key_present": model_key_status(agent),
    }
    # A binding that can route: on the agent's current bot, for a Telegram user (private
    # chats resolve by (bot, user) only; legacy, old-bot or chat-only rows never match).
    has_binding = bool(bot) and (
        IdentityBinding.objects.filter(
            agent=agent, status=IdentityBinding.ACTIVE, bot_identity=bot.bot_identity
        )
        .exclude(telegram_user_id="")
        .exists()
    )
    # SPEC §5.1 item 5: the first failing step, in this order.
    steps = [
        ("import_token", token and bool(bot)),
        ("configure_webhook", bool(bot and bot.webhook_verified)),
        ("configure_provider", provider_ok),
        ("import_secrets", not missing and items["model_key_present"][0]),
        ("enable_agent", agent.enabled),
    ]
    next_action = next((step for step, ok in steps if not ok), None)
    if next_action is None and agent.require_telegram_binding and not has_binding:
        pending = PairingCode.objects.filter(
            agent=agent, status=PairingCode.PENDING, expires_at__gt=timezone.now()
        ).exists()
        next_action = "complete_pairing" if pending else "create_pairing"
    next_action = next_action or "ready"
    return {
        "agent_key": agent_key,
        "items": {name: {"ok": ok, "reason": reason} for name, (ok, reason) in items.items()},
        "next_action": next_action,
        "ready": next_action == "ready",
    }
