"""A bot's webhook (SPEC §5.1 items 2–3): set it with a fresh secret, verify it, rotate the
secret with a grace period, and keep what ``getWebhookInfo`` reports."""

from __future__ import annotations

import datetime as dt
import secrets

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.audit import record_audit
from agents.secret_store import get_active_secret_value, import_secret
from telegram.bot_api import TelegramError
from telegram.bot_clients import TelegramSetupError, client_for, get_agent
from telegram.models import Bot, webhook_secret_ref

ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
SECRET_ROTATION_GRACE = dt.timedelta(minutes=10)


def webhook_url_for(bot_identity: str, base_url: str | None = None) -> str:
    base = (base_url or settings.PUBLIC_BASE_URL).rstrip("/")
    return f"{base}/telegram/webhook/{bot_identity}/"


def configure_webhook(
    agent_key: str,
    *,
    actor: str,
    base_url: str | None = None,
    keep_secret: bool = False,
    rotating: bool = False,
) -> dict:
    """Set the webhook with a fresh secret and verify it (SPEC §5.1 items 2–3).

    Order matters: the new secret is stored the moment ``setWebhook`` accepted it (Telegram
    signs with it from then on), before ``getWebhookInfo``, so a failing verification can
    never leave Telegram with a secret we do not know.
    """
    agent = get_agent(agent_key)
    bot = Bot.objects.filter(agent=agent).first()
    if bot is None:
        raise TelegramSetupError(f"Agent '{agent_key}' has no bot yet: import its token first.")
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise TelegramSetupError("--base-url must start with https:// (or http:// locally).")
    client = client_for(agent_key)
    url = webhook_url_for(bot.bot_identity, base_url)
    try:
        before = client.get_webhook_info()
    except TelegramError as exc:
        _record_bot_error(bot, str(exc))
        raise TelegramSetupError(f"getWebhookInfo failed: {exc}")
    previous_url = before.get("url") or ""
    existing_secret = get_active_secret_value(webhook_secret_ref(agent_key))
    # Fresh randomness every time (never derived from the bot id or anything public):
    # 32 bytes → 43 characters of A-Za-z0-9_-.
    secret = existing_secret if (keep_secret and existing_secret) else secrets.token_urlsafe(32)
    try:
        client.set_webhook(url, secret, ALLOWED_UPDATES)
    except TelegramError as exc:
        _record_bot_error(bot, str(exc))
        raise TelegramSetupError(f"setWebhook failed: {exc}")
    now = timezone.now()
    # During a rotation the previous secret stays accepted for a while (SPEC §5.1 item 3).
    grace_until = now + SECRET_ROTATION_GRACE if rotating and existing_secret else None
    with transaction.atomic():
        if secret != existing_secret:
            import_secret(
                webhook_secret_ref(agent_key),
                secret,
                actor=actor,
                metadata={"bot_identity": bot.bot_identity},
            )
        Bot.objects.filter(pk=bot.pk).update(
            webhook_url=url,
            webhook_configured_at=now,
            webhook_verified=False,
            previous_secret_valid_until=grace_until,
        )
        record_audit(
            actor,
            "telegram.rotate_webhook_secret" if rotating else "telegram.configure_webhook",
            bot,
            url=url,
            previous_url=previous_url or None,
        )
    warnings = []
    if previous_url and previous_url != url:
        warnings.append(
            f"The bot's webhook pointed to another URL before ({previous_url}); another system "
            "may have owned this bot."
        )
    try:
        info = client.get_webhook_info()
    except TelegramError as exc:
        _record_bot_error(bot, f"getWebhookInfo after setWebhook failed: {exc}")
        info = None
        warnings.append(f"The webhook was set, but getWebhookInfo failed: {exc}")
    verified = bool(info) and info.get("url") == url
    if info is not None:
        store_webhook_info(bot, info, verified=verified)
        if not verified:
            warnings.append(f"getWebhookInfo reports {info.get('url')!r}, not {url!r}.")
    return {
        "agent_key": agent_key,
        "webhook_url": url,
        "verified": verified,
        "previous_url": previous_url or None,
        "rotated": rotating,
        "grace_until": grace_until.isoformat() if grace_until else None,
        "last_error_message": (info or {}).get("last_error_message") or None,
        "warnings": warnings,
    }


def store_webhook_info(bot: Bot, info: dict, *, verified: bool) -> None:
    """Keep what getWebhookInfo said, including Telegram's own last delivery error."""
    error_date = info.get("last_error_date")
    error_at = (
        dt.datetime.fromtimestamp(error_date, tz=dt.UTC)
        if isinstance(error_date, int) and not isinstance(error_date, bool) and error_date > 0
        else None
    )
    Bot.objects.filter(pk=bot.pk).update(
        webhook_info=info,
        webhook_info_at=timezone.now(),
        webhook_verified=verified,
        last_error_message=str(info.get("last_error_message") or "")[:2000],
        last_error_at=error_at,
    )


def rotate_webhook_secret(agent_key: str, *, actor: str) -> dict:
    bot = Bot.objects.filter(agent__agent_key=agent_key).first()
    if bot is None or not bot.webhook_url:
        raise TelegramSetupError(f"Agent '{agent_key}' has no webhook configured yet.")
    base = bot.webhook_url.split("/telegram/webhook/")[0]
    return configure_webhook(agent_key, actor=actor, base_url=base, rotating=True)


def _record_bot_error(bot: Bot, message: str) -> None:
    Bot.objects.filter(pk=bot.pk).update(
        last_error_message=message[:2000], last_error_at=timezone.now()
    )
