"""A bot's setup (SPEC §5.1): token import and rotation, webhook, identity.

Each function is the one door for the admin and the commands; network calls to Telegram
happen outside transactions, and every stored change is audited.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.audit import record_audit
from agents.models import AgentProfile, Secret
from agents.secret_store import (
    SecretStoreError,
    SecretUnavailable,
    get_active_secret,
    get_active_secret_value,
    import_secret,
)
from telegram.api_errors import recorder
from telegram.bot_api import TelegramClient, TelegramError, TelegramNetworkError
from telegram.models import Bot, IdentityBinding, PairingCode, token_ref, webhook_secret_ref

ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
SECRET_ROTATION_GRACE = dt.timedelta(minutes=10)


class TelegramSetupError(Exception):
    """An onboarding step failed; nothing was stored. Safe to show (never a token)."""


def get_agent(agent_key: str) -> AgentProfile:
    agent = AgentProfile.objects.filter(agent_key=agent_key).first()
    if agent is None:
        raise TelegramSetupError(f"Agent profile '{agent_key}' not found")
    return agent


def bot_client(token: str, subject: str = "") -> TelegramClient:
    """A Bot API client for ``token`` on the configured API (a local fake in tests); its
    errors are recorded for the admin under ``subject`` (telegram.api_errors)."""
    return TelegramClient(
        token, base_url=settings.TELEGRAM_API_BASE_URL, on_error=recorder(subject)
    )


def agent_client(agent_key: str) -> TelegramClient | None:
    """The client of the agent's bot, or None when it has no token.

    Raises ``SecretUnavailable`` when the token cannot be decrypted."""
    token = get_active_secret_value(token_ref(agent_key))
    return bot_client(token, agent_key) if token else None


def client_for(agent_key: str) -> TelegramClient:
    client = agent_client(agent_key)
    if client is None:
        raise TelegramSetupError(
            f"No Telegram token imported for agent '{agent_key}': import one first."
        )
    return client


# Onboarding ------------------------------------------------------------------------------


@dataclass
class ImportResult:
    bot: Bot
    rotated: bool
    replaced_bot: str | None
    revoked_bindings: int
    expired_pairings: int = 0
    # A rotation sets the webhook again with the new token; if Telegram refuses that, the
    # token is still stored (it was verified) and the reason is reported here.
    webhook: dict | None = None
    webhook_error: str | None = None
    # After --replace-bot: whether Telegram stopped sending the old bot's updates to us.
    old_webhook_deleted: bool | None = None
    old_webhook_error: str | None = None


def import_telegram_token(
    agent_key: str, token: str, *, actor: str, replace_bot: bool = False
) -> ImportResult:
    """Verify ``token`` with getMe, then store it and the bot identity (SPEC §5.1 item 1)."""
    agent = get_agent(agent_key)
    token = (token or "").strip()
    if not token:
        raise TelegramSetupError("Refusing an empty Telegram token.")
    if any(c.isspace() for c in token) or len(token) > 200:
        raise TelegramSetupError("That does not look like a Telegram bot token.")
    try:
        info = bot_client(token, agent_key).get_me()  # outside any transaction: network I/O
    except TelegramNetworkError as exc:
        raise TelegramSetupError(f"Could not reach Telegram to verify the token: {exc}")
    except TelegramError as exc:
        raise TelegramSetupError(f"Telegram rejected the token: {exc}")
    identity = str(info.id)
    try:
        return _store_imported_token(agent, token, info, actor=actor, replace_bot=replace_bot)
    except IntegrityError:
        # Another import claimed this bot identity between our check and our insert.
        raise TelegramSetupError(
            f"Telegram bot identity '{identity}' was just assigned concurrently; try again."
        )


def _store_imported_token(agent, token, info, *, actor: str, replace_bot: bool) -> ImportResult:
    agent_key, identity = agent.agent_key, str(info.id)
    revoked = expired = 0
    old_token = old_token_error = None
    with transaction.atomic():
        owner = Bot.objects.select_for_update().filter(bot_identity=identity).first()
        if owner is not None and owner.agent_id != agent.pk:
            raise TelegramSetupError(
                f"Telegram bot identity '{identity}' is already assigned to agent "
                f"'{owner.agent.agent_key}'"
            )
        current = Bot.objects.select_for_update().filter(agent=agent).first()
        replaced = None
        if current is not None and current.bot_identity != identity:
            if not replace_bot:
                raise TelegramSetupError(
                    f"Agent '{agent_key}' already has bot "
                    f"@{current.username or current.bot_identity}"
                    f" ({current.bot_identity}); pass --replace-bot to switch to "
                    f"@{info.username} ({identity}) and revoke the old bot's bindings."
                )
            replaced = current.bot_identity
            # Kept to tell Telegram, after commit, to stop delivering the old bot's updates.
            try:
                old_token = get_active_secret_value(token_ref(agent_key))
            except SecretUnavailable as exc:
                old_token_error = str(exc)
            revoked = IdentityBinding.objects.filter(
                agent=agent, bot_identity=replaced, status=IdentityBinding.ACTIVE
            ).update(status=IdentityBinding.REVOKED, revoked_at=timezone.now())
            # Codes minted for the old bot could never be consumed on the new one.
            expired = PairingCode.objects.filter(
                agent=agent, bot_identity=replaced, status=PairingCode.PENDING
            ).update(status=PairingCode.EXPIRED)
            current.delete()
            current = None
        try:
            import_secret(
                token_ref(agent_key),
                token,
                actor=actor,
                metadata={"bot_identity": identity, "username": info.username},
            )
        except SecretStoreError as exc:
            raise TelegramSetupError(str(exc))
        if current is None:
            bot = Bot.objects.create(agent=agent, bot_identity=identity, username=info.username)
        else:
            bot = current
            Bot.objects.filter(pk=bot.pk).update(username=info.username)
            bot.username = info.username
        record_audit(
            actor,
            "telegram.import_token",
            bot,
            agent_key=agent_key,
            bot_identity=identity,
            rotated=current is not None,
            replaced_bot=replaced,
            revoked_bindings=revoked,
            expired_pairings=expired,
        )
    result = ImportResult(
        bot=bot,
        rotated=current is not None,
        replaced_bot=replaced,
        revoked_bindings=revoked,
        expired_pairings=expired,
    )
    if replaced:
        result.old_webhook_error = _delete_old_webhook(
            replaced, old_token, old_token_error, actor=actor
        )
        result.old_webhook_deleted = result.old_webhook_error is None
    if result.rotated and bot.webhook_url:
        # Same bot, new token (revoked in BotFather): point the webhook again with it, after
        # the token is committed, keeping the webhook secret so no update is refused.
        try:
            result.webhook = configure_webhook(agent_key, actor=actor, keep_secret=True)
        except (TelegramSetupError, SecretUnavailable) as exc:
            result.webhook_error = str(exc)
    return result


def old_webhook_warning(result: ImportResult) -> str:
    return (
        f"The replaced bot {result.replaced_bot} still has its webhook pointing here "
        f"(deleteWebhook failed: {result.old_webhook_error}); Telegram will keep posting its "
        "updates, which are refused. Remove it with the old token or in BotFather."
    )


def _delete_old_webhook(
    bot_identity: str, token: str | None, token_error: str | None, *, actor: str
) -> str | None:
    """``deleteWebhook`` for a replaced bot; returns why it failed, or None. Audited both
    ways: while the old bot's webhook stays set, Telegram keeps posting its updates here
    (each refused with 403) until an operator deletes it in BotFather."""
    error = None
    if token is None:
        error = token_error or "no token stored for the old bot"
    else:
        try:
            bot_client(token).delete_webhook()
        except TelegramError as exc:
            error = str(exc)
    with transaction.atomic():
        record_audit(
            actor,
            "telegram.delete_old_webhook",
            bot_identity,
            bot_identity=bot_identity,
            deleted=error is None,
            error=error,
        )
    return error


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


def reconcile_bot_identity(agent_key: str, *, actor: str) -> dict:
    agent = get_agent(agent_key)
    client = client_for(agent_key)
    try:
        info = client.get_me()
    except TelegramError as exc:
        raise TelegramSetupError(f"getMe failed: {exc}")
    identity = str(info.id)
    with transaction.atomic():
        other = Bot.objects.filter(bot_identity=identity).exclude(agent=agent).first()
        if other is not None:
            raise TelegramSetupError(
                f"Telegram bot identity '{identity}' is already assigned to agent "
                f"'{other.agent.agent_key}'"
            )
        bot, created = Bot.objects.get_or_create(
            agent=agent, defaults={"bot_identity": identity, "username": info.username}
        )
        previous_identity = None if created else bot.bot_identity
        changed = created or bot.bot_identity != identity or bot.username != info.username
        if not created and changed:
            fields = {"bot_identity": identity, "username": info.username}
            if previous_identity != identity:
                # The webhook URL carries the old identity: it must be configured again.
                fields["webhook_verified"] = False
            Bot.objects.filter(pk=bot.pk).update(**fields)
        secret = get_active_secret(token_ref(agent_key))
        if secret and (secret.metadata or {}).get("bot_identity") != identity:
            Secret.objects.filter(pk=secret.pk).update(
                metadata={**(secret.metadata or {}), "bot_identity": identity}
            )
        if changed:
            record_audit(
                actor,
                "telegram.reconcile_identity",
                bot,
                bot_identity=identity,
                username=info.username,
            )
    warnings = []
    if previous_identity and previous_identity != identity:
        warnings.append(
            f"The token now belongs to bot {identity}, not {previous_identity}: "
            "configure the webhook again."
        )
    return {
        "agent_key": agent_key,
        "bot_identity": identity,
        "username": info.username,
        "changed": changed,
        "warnings": warnings,
    }
