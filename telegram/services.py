"""Telegram business rules shared by the admin, the commands and the webhook (SPEC §5)."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from agents.audit import record_audit
from agents.models import AgentProfile, RuntimeConfig, Secret
from agents.runtime_settings import model_key_status
from agents.secret_store import (
    SecretStoreError,
    SecretUnavailable,
    get_active_secret,
    get_active_secret_value,
    has_active_secret,
    import_secret,
)
from telegram.client import TelegramClient, TelegramError, TelegramNetworkError
from telegram.models import Bot, IdentityBinding, PairingCode, token_ref, webhook_secret_ref

ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
PAIRING_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
PAIRING_CODE_LENGTH = 10
PAIRING_TTL_DEFAULT = 15
PAIRING_TTL_MIN, PAIRING_TTL_MAX = 1, 24 * 60
SECRET_ROTATION_GRACE = dt.timedelta(minutes=10)


class TelegramSetupError(Exception):
    """An onboarding step failed; nothing was stored. Safe to show (never a token)."""


class PairingError(Exception):
    """A refused pairing. ``reason`` is the stable code the webhook records for the admin
    (not_found, used, expired, wrong_bot); the user never sees either (SPEC §23)."""

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.reason = reason


def get_agent(agent_key: str) -> AgentProfile:
    agent = AgentProfile.objects.filter(agent_key=agent_key).first()
    if agent is None:
        raise TelegramSetupError(f"Agent profile '{agent_key}' not found")
    return agent


def client_for(agent_key: str) -> TelegramClient:
    token = get_active_secret_value(token_ref(agent_key))
    if not token:
        raise TelegramSetupError(
            f"No Telegram token imported for agent '{agent_key}': import one first."
        )
    return TelegramClient(token)


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
        info = TelegramClient(token).get_me()  # outside any transaction: network I/O
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
            TelegramClient(token).delete_webhook()
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


# Readiness ---------------------------------------------------------------------------------


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


# Pairing and bindings ---------------------------------------------------------------------


def user_agent_conversation_id(agent_key: str, consumer_user_id: str) -> str:
    return f"user-agent:{agent_key}:{consumer_user_id}"


def chat_conversation_id(bot_identity: str, chat_id: str) -> str:
    return f"telegram:{bot_identity}:{chat_id}"


def deep_link(username: str, code: str) -> str:
    return f"https://t.me/{username}?start={code}"


def new_code() -> str:
    return "".join(secrets.choice(PAIRING_ALPHABET) for _ in range(PAIRING_CODE_LENGTH))


def create_pairing_code(
    consumer_user_id: str, agent_key: str, *, actor: str, ttl_minutes: int | None = None
) -> PairingCode:
    consumer_user_id = (consumer_user_id or "").strip()
    if not consumer_user_id or len(consumer_user_id) > 255:
        raise PairingError("consumer_user_id must be 1-255 characters.")
    agent = AgentProfile.objects.filter(agent_key=agent_key, enabled=True).first()
    if agent is None:
        raise PairingError(f"Agent profile '{agent_key}' not found or disabled")
    bot = Bot.objects.filter(agent=agent).first()
    if bot is None:
        raise PairingError(
            f"Agent '{agent_key}' has no Telegram bot identity: import its token first."
        )
    ttl = PAIRING_TTL_DEFAULT if ttl_minutes is None else ttl_minutes
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise PairingError("ttl_minutes must be a whole number of minutes.")
    ttl = min(PAIRING_TTL_MAX, max(PAIRING_TTL_MIN, ttl))  # clamped, as upstream: 1 min … 24 h
    now = timezone.now()
    for _ in range(5):
        try:
            with transaction.atomic():
                PairingCode.objects.filter(
                    consumer_user_id=consumer_user_id, agent=agent, status=PairingCode.PENDING
                ).update(status=PairingCode.EXPIRED)
                code = PairingCode.objects.create(
                    code=new_code(),
                    consumer_user_id=consumer_user_id,
                    agent=agent,
                    bot_identity=bot.bot_identity,
                    created_at=now,
                    expires_at=now + dt.timedelta(minutes=ttl),
                )
                record_audit(
                    actor,
                    "telegram.create_pairing_code",
                    code,
                    consumer_user_id=consumer_user_id,
                    agent_key=agent_key,
                )
                return code
        except IntegrityError:
            continue  # a code collision (1 in 31^10): draw again
    raise PairingError("Failed to generate unique pairing code")


def consume_pairing_code(
    code: str, *, bot_identity: str, telegram_user_id: str, telegram_chat_id: str
) -> IdentityBinding:
    """Checks in order: not found, not pending, expired (persisted), wrong bot (SPEC §5.2).

    The not-pending refusal is worded by the stored status, so a code that timed out says
    "expired" on its first use and on every retry after (upstream rolled the expiry back).
    """
    now = timezone.now()
    with transaction.atomic():
        pairing = PairingCode.objects.select_for_update().filter(code=code.strip().upper()).first()
        if pairing is None:
            raise PairingError("Pairing code not found", "not_found")
        if pairing.status != PairingCode.PENDING:
            raise _not_pending(pairing)
        if pairing.expires_at <= now:
            PairingCode.objects.filter(pk=pairing.pk).update(status=PairingCode.EXPIRED)
            expired = True
        else:
            expired = False
    if expired:  # committed above, so the expiry sticks
        raise PairingError("Pairing code expired", "expired")
    with transaction.atomic():
        pairing = PairingCode.objects.select_for_update().get(pk=pairing.pk)
        if pairing.status != PairingCode.PENDING:  # consumed concurrently
            raise _not_pending(pairing)
        if pairing.bot_identity != bot_identity:
            raise PairingError("Pairing code belongs to a different Telegram bot", "wrong_bot")
        binding = bind_identity(
            pairing.consumer_user_id,
            pairing.agent,
            bot_identity=bot_identity,
            telegram_user_id=telegram_user_id,
            telegram_chat_id=telegram_chat_id,
            source="telegram_pairing",
            actor=f"telegram:{telegram_user_id}",
        )
        PairingCode.objects.filter(pk=pairing.pk).update(
            status=PairingCode.USED,
            used_at=now,
            telegram_user_id=telegram_user_id,
            telegram_chat_id=telegram_chat_id,
        )
        return binding


def _not_pending(pairing: PairingCode) -> PairingError:
    if pairing.status == PairingCode.EXPIRED:
        return PairingError("Pairing code expired", "expired")
    return PairingError("Pairing code already used", "used")


def bind_identity(
    consumer_user_id: str,
    agent: AgentProfile,
    *,
    bot_identity: str | None,
    telegram_user_id: str = "",
    telegram_chat_id: str = "",
    source: str = "manual",
    actor: str,
) -> IdentityBinding:
    """Create an active binding, revoking whatever collides with "1 user → 1 bot"."""
    now = timezone.now()
    with transaction.atomic():
        collisions = Q(consumer_user_id=consumer_user_id)
        if bot_identity and telegram_user_id:
            collisions |= Q(bot_identity=bot_identity, telegram_user_id=telegram_user_id)
        if bot_identity and telegram_chat_id:
            collisions |= Q(bot_identity=bot_identity, telegram_chat_id=telegram_chat_id)
        revoked = IdentityBinding.objects.filter(collisions, status=IdentityBinding.ACTIVE).update(
            status=IdentityBinding.REVOKED, revoked_at=now
        )
        binding = IdentityBinding.objects.create(
            consumer_user_id=consumer_user_id,
            agent=agent,
            conversation_id=user_agent_conversation_id(agent.agent_key, consumer_user_id),
            bot_identity=bot_identity,
            source=source,
            telegram_user_id=telegram_user_id,
            telegram_chat_id=telegram_chat_id,
            bound_at=now,
        )
        record_audit(
            actor,
            "telegram.bind",
            binding,
            consumer_user_id=consumer_user_id,
            agent_key=agent.agent_key,
            revoked=revoked,
        )
        return binding


# Every routed update asks this: written as SQL because the ORM spends longer compiling the
# lookup than the database spends answering it (bench/webhook_ingest.py). Only a match is
# then loaded through the ORM, with its agent.
_BINDING_SQL = (
    f"SELECT id FROM {IdentityBinding._meta.db_table} "  # noqa: S608 (names, not input)
    "WHERE status = %s AND bot_identity = %s AND telegram_user_id = %s "
    "ORDER BY bound_at DESC LIMIT 1"
)


def resolve_binding(bot_identity: str, telegram_user_id: str):
    """The active binding of (bot, Telegram user); legacy rows (no bot) never match.

    Only for private chats (SPEC §5.2): there is no chat fallback, so a binding never
    routes anybody else's message, and a group never reaches a member's conversation.
    """
    if not bot_identity or not telegram_user_id:
        return None
    with connection.cursor() as cursor:
        cursor.execute(_BINDING_SQL, [IdentityBinding.ACTIVE, bot_identity, telegram_user_id])
        row = cursor.fetchone()
    if row is None:
        return None
    return IdentityBinding.objects.select_related("agent").filter(pk=row[0]).first()


def revoke_binding(binding: IdentityBinding, *, actor: str) -> bool:
    with transaction.atomic():
        changed = IdentityBinding.objects.filter(
            pk=binding.pk, status=IdentityBinding.ACTIVE
        ).update(status=IdentityBinding.REVOKED, revoked_at=timezone.now())
        if changed:
            record_audit(
                actor, "telegram.revoke_binding", binding, consumer_user_id=binding.consumer_user_id
            )
        return bool(changed)


# Legacy migration -------------------------------------------------------------------------

# Rows from before bot identities (a binding's bot identity is nullable only for those).
MISSING_BOT_IDENTITY = Q(bot_identity__isnull=True) | Q(bot_identity="")


def soft_reset_legacy(
    *, apply: bool, revoke_bindings: bool, expire_pairings: bool, actor: str
) -> dict:
    """Bindings/codes from before bot identities (SPEC §5.2, reference identity.md §9.1).

    A dry run (the default) writes nothing and reports what an apply with the same flags
    would change. An apply is idempotent: rows it already handled are not touched again,
    so a second apply reports 0 changes (upstream re-annotated every run).
    """
    legacy_bindings = IdentityBinding.objects.filter(
        MISSING_BOT_IDENTITY, source="telegram_pairing"
    )
    legacy_pairings = PairingCode.objects.filter(status=PairingCode.PENDING, bot_identity="")
    report = {
        "revoked_bindings": 0,
        "annotated_bindings": 0,
        "expired_pairings": 0,
        "pending_pairings_missing_bot_identity": 0,
        "legacy_bindings_missing_bot_identity": 0,
        "profiles_missing_bot_identity": AgentProfile.objects.filter(bot__isnull=True).count(),
        "applied": apply,
    }
    now = timezone.now()
    marks = {"soft_reset_reason": "missing_bot_identity", "soft_reset_at": now.isoformat()}
    with transaction.atomic():
        if apply:
            legacy_bindings = legacy_bindings.select_for_update()
            legacy_pairings = legacy_pairings.select_for_update()
        bindings, pairings = list(legacy_bindings), list(legacy_pairings)
        report["legacy_bindings_missing_bot_identity"] = len(bindings)
        report["pending_pairings_missing_bot_identity"] = len(pairings)
        for binding in bindings:
            already = (binding.metadata or {}).get("soft_reset_reason") == "missing_bot_identity"
            revoke = revoke_bindings and binding.status == IdentityBinding.ACTIVE
            if already and not revoke:
                continue  # idempotent: a second apply changes nothing
            report["revoked_bindings" if revoke else "annotated_bindings"] += 1
            if not apply:
                continue
            binding.metadata = {
                **(binding.metadata or {}),
                **marks,
                "soft_reset_mode": "telegram_bot_identity_v1",
            }
            fields = ["metadata"]
            if revoke:
                binding.status, binding.revoked_at = IdentityBinding.REVOKED, now
                fields += ["status", "revoked_at"]
            binding.save(update_fields=fields)
        if expire_pairings:
            report["expired_pairings"] = len(pairings)
            if apply:
                for pairing in pairings:
                    pairing.status = PairingCode.EXPIRED
                    pairing.metadata = {**(pairing.metadata or {}), **marks}
                    pairing.save(update_fields=["status", "metadata"])
        changed = report["revoked_bindings"] + report["annotated_bindings"]
        if apply and changed + report["expired_pairings"]:
            record_audit(actor, "telegram.soft_reset", None, **report)
    return report
