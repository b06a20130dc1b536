"""A bot's setup (SPEC §5.1): token import and rotation, identity; the door to the webhook
steps (``bot_webhook``) and the clients (``bot_clients``), re-exported here.

Each function is the one door for the admin and the commands; network calls to Telegram
happen outside transactions, and every stored change is audited.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.audit import record_audit
from agents.models import Secret
from agents.secret_store import (
    SecretStoreError,
    SecretUnavailable,
    get_active_secret,
    get_active_secret_value,
    import_secret,
)
from telegram.bot_api import TelegramError, TelegramNetworkError
from telegram.bot_clients import (  # noqa: F401  (re-exported: the setup's one door)
    TelegramSetupError,
    agent_client,
    bot_client,
    client_for,
    get_agent,
)
from telegram.bot_webhook import (  # noqa: F401  (re-exported: the setup's one door)
    ALLOWED_UPDATES,
    SECRET_ROTATION_GRACE,
    configure_webhook,
    rotate_webhook_secret,
    store_webhook_info,
    webhook_url_for,
)
from telegram.models import Bot, IdentityBinding, PairingCode, token_ref

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
