"""Pairing codes and identity bindings (SPEC §5.2): codes, bindings, resolution, soft reset."""

from __future__ import annotations

import datetime as dt
import secrets

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from agents import events
from agents.audit import record_audit
from agents.models import AgentProfile
from telegram import sql
from telegram.models import Bot, IdentityBinding, PairingCode

PAIRING_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
PAIRING_CODE_LENGTH = 10
PAIRING_TTL_DEFAULT = 15
PAIRING_TTL_MIN, PAIRING_TTL_MAX = 1, 24 * 60


class PairingError(Exception):
    """A refused pairing. ``reason`` is the stable code the webhook records for the admin
    (not_found, used, expired, wrong_bot); the user never sees either (SPEC §23)."""

    def __init__(self, message: str, reason: str = "invalid"):
        super().__init__(message)
        self.reason = reason


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
        events.emit(
            events.PAIRING_COMPLETED,
            agent_key=pairing.agent.agent_key,
            consumer_user_id=pairing.consumer_user_id,
            data={
                "pairing_code": pairing.code,
                "binding_id": binding.pk,
                "conversation_id": binding.conversation_id,
                "telegram_user_id": str(telegram_user_id),
            },
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
        # "1 user → 1 bot" holds within a tenant: consumer ids are the tenant's (SPEC §15).
        collisions = Q(consumer_user_id=consumer_user_id, agent__tenant_id=agent.tenant_id)
        if bot_identity and telegram_user_id:
            collisions |= Q(bot_identity=bot_identity, telegram_user_id=telegram_user_id)
        if bot_identity and telegram_chat_id:
            collisions |= Q(bot_identity=bot_identity, telegram_chat_id=telegram_chat_id)
        replaced = list(
            IdentityBinding.objects.filter(collisions, status=IdentityBinding.ACTIVE)
            .select_related("agent")
            .select_for_update(of=("self",))
        )
        revoked = IdentityBinding.objects.filter(
            pk__in=[b.pk for b in replaced], status=IdentityBinding.ACTIVE
        ).update(status=IdentityBinding.REVOKED, revoked_at=now)
        for old in replaced:
            _binding_revoked(old, "replaced")
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


def resolve_binding(bot_identity: str, telegram_user_id: str):
    """The active binding of (bot, Telegram user); legacy rows (no bot) never match.

    Only for private chats (SPEC §5.2): there is no chat fallback, so a binding never
    routes anybody else's message, and a group never reaches a member's conversation.
    """
    if not bot_identity or not telegram_user_id:
        return None
    pk = sql.active_binding_id(bot_identity, telegram_user_id)
    if pk is None:
        return None
    return IdentityBinding.objects.select_related("agent").filter(pk=pk).first()


def revoke_binding(binding: IdentityBinding, *, actor: str) -> bool:
    with transaction.atomic():
        changed = IdentityBinding.objects.filter(
            pk=binding.pk, status=IdentityBinding.ACTIVE
        ).update(status=IdentityBinding.REVOKED, revoked_at=timezone.now())
        if changed:
            record_audit(
                actor, "telegram.revoke_binding", binding, consumer_user_id=binding.consumer_user_id
            )
            _binding_revoked(binding, "revoked")
        return bool(changed)


def _binding_revoked(binding: IdentityBinding, reason: str) -> None:
    """Tell the host app (SPEC §15): ``revoked`` (by the admin, a command or the API),
    ``replaced`` (a newer binding of the same user or Telegram account), ``soft_reset``."""
    events.emit(
        events.BINDING_REVOKED,
        agent_key=binding.agent.agent_key,
        consumer_user_id=binding.consumer_user_id,
        data={
            "binding_id": binding.pk,
            "conversation_id": binding.conversation_id,
            "reason": reason,
        },
    )


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
    ).select_related("agent")
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
            legacy_bindings = legacy_bindings.select_for_update(of=("self",))
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
            if revoke:
                _binding_revoked(binding, "soft_reset")
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
