"""Telegram bots, pairing codes, identity bindings and update dedupe (SPEC §3, §5)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from agents.models import AgentProfile, Tenant
from agents.secret_refs import bot_token_ref, webhook_secret_ref

# The old names, kept for the modules that still import them from here.
token_ref = bot_token_ref


class Bot(models.Model):
    """The Telegram bot of one agent. Token and webhook secret live in the secret store."""

    agent = models.OneToOneField(AgentProfile, on_delete=models.CASCADE, related_name="bot")
    bot_identity = models.CharField(max_length=32, unique=True, help_text="Numeric id from getMe.")
    username = models.CharField(max_length=64, blank=True)
    webhook_url = models.URLField(max_length=500, blank=True)
    webhook_configured_at = models.DateTimeField(null=True, blank=True)
    webhook_info = models.JSONField(default=dict, blank=True)
    webhook_info_at = models.DateTimeField(null=True, blank=True)
    webhook_verified = models.BooleanField(default=False)
    last_error_message = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    # During a secret rotation the previous secret stays valid until this moment.
    previous_secret_valid_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["agent__agent_key"]

    def __str__(self) -> str:
        return f"@{self.username or self.bot_identity} ({self.agent.agent_key})"

    @property
    def token_ref(self) -> str:
        return bot_token_ref(self.agent.agent_key)

    @property
    def webhook_secret_ref(self) -> str:
        return webhook_secret_ref(self.agent.agent_key)


class PairingCode(models.Model):
    PENDING, USED, EXPIRED = "pending", "used", "expired"
    STATUS_CHOICES = [(s, s) for s in (PENDING, USED, EXPIRED)]

    code = models.CharField(max_length=16, unique=True)
    consumer_user_id = models.CharField(max_length=255, db_index=True)
    agent = models.ForeignKey(AgentProfile, on_delete=models.CASCADE, related_name="pairing_codes")
    bot_identity = models.CharField(max_length=32, blank=True)
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    telegram_user_id = models.CharField(max_length=32, blank=True)
    telegram_chat_id = models.CharField(max_length=32, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.code} ({self.status})"


class IdentityBinding(models.Model):
    ACTIVE, REVOKED = "active", "revoked"
    STATUS_CHOICES = [(s, s) for s in (ACTIVE, REVOKED)]
    SOURCE_CHOICES = [(s, s) for s in ("manual", "telegram_pairing", "api")]

    consumer_user_id = models.CharField(max_length=255)
    agent = models.ForeignKey(AgentProfile, on_delete=models.CASCADE, related_name="bindings")
    # The agent's tenant, copied on save: consumer ids are unique per tenant (SPEC §15), and
    # a constraint cannot reach through the agent.
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+", editable=False)
    conversation_id = models.CharField(max_length=255)
    bot_identity = models.CharField(max_length=32, null=True, blank=True)
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=ACTIVE)
    source = models.CharField(max_length=20, choices=SOURCE_CHOICES, default="manual")
    telegram_user_id = models.CharField(max_length=32, blank=True)
    telegram_chat_id = models.CharField(max_length=32, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    bound_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-bound_at"]
        permissions = [("send_as_agent", "Can send a message in a conversation as its agent")]
        indexes = [
            models.Index(
                fields=["bot_identity", "telegram_user_id", "status"], name="binding_bot_user_idx"
            ),
            models.Index(
                fields=["bot_identity", "telegram_chat_id", "status"], name="binding_bot_chat_idx"
            ),
            models.Index(fields=["consumer_user_id", "status"], name="binding_consumer_idx"),
        ]
        constraints = [
            # "1 user → 1 bot": at most one active binding per consumer user of a tenant.
            models.UniqueConstraint(
                fields=["tenant", "consumer_user_id"],
                condition=models.Q(status="active"),
                name="binding_one_active_per_consumer",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.consumer_user_id} → {self.agent.agent_key} ({self.status})"

    def save(self, *args, **kwargs):
        if self.tenant_id is None and self.agent_id is not None:
            self.tenant_id = AgentProfile.objects.filter(pk=self.agent_id).values_list(
                "tenant_id", flat=True
            )[0]
        super().save(*args, **kwargs)


class TelegramUpdate(models.Model):
    """Every update we answered, so a redelivery is recognised (kept ≥ 48 h)."""

    bot_identity = models.CharField(max_length=32)
    update_id = models.BigIntegerField()
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    outcome = models.CharField(max_length=20)
    detail = models.CharField(max_length=300, blank=True)
    message_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["bot_identity", "update_id"], name="update_once_per_bot"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.bot_identity}#{self.update_id} {self.outcome}"


class SenderQuota(models.Model):
    """The token bucket of one Telegram user on one bot (SPEC §23 quotas at the door).

    Changed only by ``telegram.quotas`` in one atomic upsert per update, so every web
    server shares it. Times are Unix seconds (floats) because the refill is arithmetic on
    them inside that statement, the same on PostgreSQL and SQLite.
    """

    bot_identity = models.CharField(max_length=32)
    telegram_user_id = models.CharField(max_length=32)
    tokens = models.FloatField()
    refilled_at = models.FloatField()
    # Whether the sender's latest message was admitted (the upsert reports it through this).
    admitted = models.BooleanField(default=True)
    # When the sender was last told they are throttled (at most one notice per minute).
    notified_at = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["bot_identity", "telegram_user_id"], name="sender_quota_once"
            ),
        ]

    def __str__(self) -> str:
        return f"quota of {self.telegram_user_id} on {self.bot_identity}"


class IngressIssue(models.Model):
    """Updates we refused or could not route, for admins: an unbound user, a missing or
    disabled agent, a failed pairing attempt. The rows of one (bot, Telegram user) in the
    last hour are also the shared state of the pairing cooldown and the "please pair"
    notice (every server reads the same rows)."""

    UNBOUND, UNROUTABLE = "unbound", "unroutable"
    PAIRING_FAILED, PAIRING_COOLDOWN = "pairing_failed", "pairing_cooldown"
    PAUSED = "budget_paused"  # the agent's monthly budget is spent (SPEC §24)

    bot_identity = models.CharField(max_length=32)
    kind = models.CharField(max_length=20)  # one of the constants above
    detail = models.CharField(max_length=300)
    telegram_user_id = models.CharField(max_length=32, blank=True)
    telegram_chat_id = models.CharField(max_length=32, blank=True)
    # The user was sent a notice about this one (at most one "please pair" per hour).
    notified = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["bot_identity", "telegram_user_id", "kind", "created_at"],
                name="issue_bot_user_kind_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


class SandboxMessage(models.Model):
    """A message of a sandbox chat (DEBUG sandbox): sent by a bot through the built-in fake
    Bot API, or typed by a pretend Telegram user in the admin's sandbox chat."""

    BOT, USER = "bot", "user"
    SENDER_CHOICES = [(BOT, "bot"), (USER, "Telegram user")]

    bot_id = models.CharField(max_length=32, db_index=True)
    chat_id = models.CharField(max_length=64)
    sender = models.CharField(max_length=4, choices=SENDER_CHOICES, default=BOT)
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("use_sandbox_chat", "Can chat with sandbox bots as a Telegram user")]

    def __str__(self) -> str:
        return f"bot {self.bot_id} → chat {self.chat_id}: {self.text[:40]}"


class SandboxWebhook(models.Model):
    """The webhook URL a sandbox bot was given (the secret is never kept here: it lives in
    the secret store, and simulate_update signs with it from there)."""

    bot_id = models.CharField(max_length=32, unique=True)
    url = models.URLField(max_length=500, blank=True)
    allowed_updates = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"sandbox webhook of bot {self.bot_id}"


from telegram.outbox_models import OutboxBot, OutboxMessage  # noqa: E402,F401 (registered here)
