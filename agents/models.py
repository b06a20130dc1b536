"""The ground floor: agent profiles, the encrypted secret store, runtime config,
conversations with their history, and the audit trail. Imports no other app (SPEC §2)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from agents import runtime_settings
from agents.conversation_models import (  # noqa: F401  (registered with the app's models)
    Conversation,
    ConversationEntry,
)
from agents.external_errors import ExternalApiError  # noqa: F401  (registered: app models)
from agents.skill_models import (  # noqa: F401  (registered with the app's models)
    GlobalSkill,
    GlobalSkillRelease,
    GlobalSkillVersion,
)
from agents.spend import MonthlySpend  # noqa: F401  (registered with the app's models)

agent_key_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$",
    "Agent key must be a slug: 1-64 lowercase letters, digits, '-' or '_', "
    "starting and ending with a letter or digit.",
)
secret_ref_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,199}$",
    "Secret ref must be 1-200 characters of letters, digits, '.', '_', ':' or '-', "
    "starting with a letter or digit.",
)

BRIDGE_CONFIG_KEYS = {
    "enabled": bool,
    "base_url": str,
    "service_id": str,
    "app_key": str,
    "service_key_secret_ref": str,
    "app_base_url_map_json_secret_ref": str,
}


def validate_bridge_config(value: object) -> None:
    """The bridge config is a flat object of known keys; anything else is a typo to report."""
    if value in (None, {}):
        return
    if not isinstance(value, dict):
        raise ValidationError("Bridge config must be a JSON object.")
    unknown = sorted(set(value) - set(BRIDGE_CONFIG_KEYS))
    if unknown:
        raise ValidationError(
            f"Unknown bridge config key(s): {', '.join(unknown)}. "
            f"Allowed: {', '.join(sorted(BRIDGE_CONFIG_KEYS))}."
        )
    for key, expected in BRIDGE_CONFIG_KEYS.items():
        if key in value and value[key] is not None and not isinstance(value[key], expected):
            raise ValidationError(f"Bridge config '{key}' must be a {expected.__name__}.")
    for key in ("service_key_secret_ref", "app_base_url_map_json_secret_ref"):
        if value.get(key):
            try:
                secret_ref_validator(value[key])
            except ValidationError as exc:
                raise ValidationError(f"Bridge config '{key}': {exc.messages[0]}", code="bad_ref")
    base_url = value.get("base_url")
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ValidationError("Bridge config 'base_url' must start with http:// or https://.")
    if value.get("enabled") and not base_url:
        raise ValidationError("Bridge config needs 'base_url' when 'enabled' is true.")


def validate_secret_refs(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("secrets_ref must be a list of secret refs.")
    for item in value:
        try:
            secret_ref_validator(item)
        except ValidationError as exc:
            # A distinct code: JSONField would replace an "invalid" message with its own.
            raise ValidationError(f"{exc.messages[0]} (got {item!r})", code="bad_secret_ref")


class Tenant(models.Model):
    """The host product an agent serves (SPEC §15): consumer user ids are unique within one."""

    DEFAULT_SLUG = "default"

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


def default_tenant_id() -> int:
    """Agents created without a tenant belong to ``default`` (made on first use)."""
    tenant, _ = Tenant.objects.get_or_create(slug=Tenant.DEFAULT_SLUG, defaults={"name": "Default"})
    return tenant.pk


class AgentProfile(runtime_settings.AgentRuntimeFields):
    agent_key = models.CharField(max_length=64, unique=True, validators=[agent_key_validator])
    tenant = models.ForeignKey(
        Tenant, on_delete=models.PROTECT, related_name="agents", default=default_tenant_id
    )
    version = models.PositiveIntegerField(default=1, help_text="Bumped on every change.")
    secrets_ref = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_secret_refs],
        help_text="Secret refs this agent uses (checked by readiness).",
    )
    bridge_config = models.JSONField(default=dict, blank=True, validators=[validate_bridge_config])
    enabled = models.BooleanField(default=True)
    require_telegram_binding = models.BooleanField(
        default=False,
        help_text="Off: unpaired senders reach the agent in a per-chat conversation. "
        "On: only paired users.",
    )
    # SPEC §22: the server sends every reply (the bot token never leaves it); "worker" is
    # the compatibility mode for workers that still send replies themselves.
    SERVER_DELIVERY, WORKER_DELIVERY = "server", "worker"
    delivery = models.CharField(
        max_length=10,
        choices=[(SERVER_DELIVERY, "server (outbox)"), (WORKER_DELIVERY, "worker (compatibility)")],
        default=SERVER_DELIVERY,
        help_text="Who sends replies to Telegram. Only 'worker' gives workers the bot token.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["agent_key"]

    def __str__(self) -> str:
        return self.agent_key

    def clean(self) -> None:
        errors = runtime_settings.check_profile_runtime(self)
        if errors:
            raise ValidationError(errors)

    @property
    def bridge_enabled(self) -> bool:
        return bool((self.bridge_config or {}).get("enabled"))


class Secret(models.Model):
    """One version of one secret. The value is only ever stored encrypted (SPEC §4)."""

    ALGORITHM = "aes-256-gcm"

    secret_ref = models.CharField(max_length=200, validators=[secret_ref_validator])
    version = models.PositiveIntegerField()
    ciphertext = models.BinaryField()
    nonce = models.BinaryField()
    key_id = models.CharField(max_length=16)
    algorithm = models.CharField(max_length=32, default=ALGORITHM)
    active = models.BooleanField(default=True)
    rotated_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["secret_ref", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["secret_ref", "version"], name="secret_ref_version_unique"
            ),
            models.UniqueConstraint(
                fields=["secret_ref"],
                condition=models.Q(active=True),
                name="secret_one_active_version_per_ref",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.secret_ref} v{self.version}"


class RuntimeConfig(models.Model):
    """The single row of runtime settings, editable in the admin (SPEC §3, §10)."""

    PROVIDER_LOCAL, PROVIDER_FLY, PROVIDER_NONE = "local", "fly", "none"
    PROVIDER_CHOICES = [
        (PROVIDER_LOCAL, "Local processes"),
        (PROVIDER_FLY, "Fly Machines"),
        (PROVIDER_NONE, "None (workers started by hand)"),
    ]

    # Provider
    provider_kind = models.CharField(
        max_length=10, choices=PROVIDER_CHOICES, default=PROVIDER_LOCAL
    )
    app_name = models.CharField(max_length=100, blank=True)
    organization_slug = models.CharField(max_length=100, blank=True)
    image = models.CharField(max_length=300, blank=True)
    region = models.CharField(max_length=20, blank=True, default="iad")
    fallback_regions = models.JSONField(default=list, blank=True)
    volume_name = models.CharField(max_length=30, blank=True, default="agent_data")
    volume_path = models.CharField(max_length=200, blank=True, default="/data")
    volume_size_gb = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(500)]
    )
    guest_cpus = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(16)]
    )
    guest_memory_mb = models.PositiveIntegerField(
        default=1024, validators=[MinValueValidator(256), MaxValueValidator(131072)]
    )
    fly_cleanup_nightly = models.BooleanField(
        default=False, help_text="Destroy every machine and volume of the app at 03:00 UTC."
    )
    # Messages
    system_prompt = models.TextField(blank=True)
    telegram_attachment_retention_seconds = models.PositiveIntegerField(
        default=7 * 24 * 3600, validators=[MinValueValidator(60)]
    )
    # Scaling, leases, retries (defaults of SPEC §6 and §10)
    max_workers = models.PositiveIntegerField(
        default=4, validators=[MinValueValidator(0), MaxValueValidator(1000)]
    )
    spawn_step = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    idle_timeout_seconds = models.PositiveIntegerField(
        default=1800, validators=[MinValueValidator(10)]
    )
    lease_seconds = models.PositiveIntegerField(
        default=360, validators=[MinValueValidator(1), MaxValueValidator(86400)]
    )
    stale_after_seconds = models.PositiveIntegerField(
        default=420, validators=[MinValueValidator(5)]
    )
    snapshot_timeout_seconds = models.PositiveIntegerField(
        default=600, validators=[MinValueValidator(0)]
    )
    max_attempts = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    retry_base_seconds = models.FloatField(default=1.0, validators=[MinValueValidator(0.0)])
    retry_factor = models.FloatField(default=2.0, validators=[MinValueValidator(1.0)])
    retry_max_seconds = models.FloatField(default=120.0, validators=[MinValueValidator(0.0)])
    snapshot_retention_seconds = models.PositiveIntegerField(
        default=7 * 24 * 3600, validators=[MinValueValidator(60)]
    )
    # Fair share of a full fleet and handoff (SPEC §6.2).
    reassign_after_seconds = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(86400)],
        help_text="With max_workers reached and a conversation waiting, a worker idle this "
        "long gives up its conversation and takes the waiting one.",
    )
    handoff_timeout_seconds = models.PositiveIntegerField(
        default=120,
        validators=[MinValueValidator(1), MaxValueValidator(3600)],
        help_text="A conversation released by a live worker waits at most this long for that "
        "worker's snapshot before another worker may claim it.",
    )
    # Quotas (SPEC §23): at the webhook door, per job's history, per worker's snapshots.
    user_rate_per_minute = models.PositiveIntegerField(
        default=20,
        validators=[MinValueValidator(1), MaxValueValidator(10_000)],
        help_text="Messages per minute a Telegram user may send to one bot (token bucket).",
    )
    user_burst = models.PositiveIntegerField(
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(10_000)],
        help_text="Messages a Telegram user may send at once before the rate applies.",
    )
    conversation_queue_cap = models.PositiveIntegerField(
        default=20,
        validators=[MinValueValidator(1), MaxValueValidator(100_000)],
        help_text="Messages a conversation may have waiting (queued or processing).",
    )
    history_entries_per_job = models.PositiveIntegerField(
        default=64,
        validators=[MinValueValidator(1), MaxValueValidator(10_000)],
        help_text="History entries one job may append (complete and messages together).",
    )
    history_bytes_per_job = models.PositiveIntegerField(
        default=1024 * 1024,
        validators=[MinValueValidator(1024), MaxValueValidator(64 * 1024 * 1024)],
        help_text="Bytes of history content (UTF-8) one job may append.",
    )
    snapshot_prepares_per_minute = models.PositiveIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Snapshots one worker may prepare per minute.",
    )
    # Budget (SPEC §24): all agents together; each agent may also have its own.
    monthly_budget_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Estimated cost all agents may spend per calendar month (UTC); empty: no "
        "cap. Warning at 80 %, new messages paused at 100 %.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "runtime config"
        verbose_name_plural = "runtime config"

    def __str__(self) -> str:
        return "Runtime config"

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        _RUNTIME_CONFIG_CACHE.clear()

    def clean(self) -> None:
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValidationError({"retry_max_seconds": "Must be at least the retry base."})
        if self.stale_after_seconds <= 0:
            raise ValidationError({"stale_after_seconds": "Must be positive."})
        if not isinstance(self.fallback_regions, list) or not all(
            isinstance(r, str) and r.strip() for r in self.fallback_regions
        ):
            raise ValidationError({"fallback_regions": "Must be a list of region codes."})

    @classmethod
    def get(cls) -> RuntimeConfig:
        """The one row, created on first use with the provider from ``WORKER_PROVIDER``."""
        config = cls.objects.filter(pk=1).first()
        if config is None:
            config, _ = cls.objects.get_or_create(
                pk=1, defaults={"provider_kind": settings.WORKER_PROVIDER}
            )
        return config

    @classmethod
    def get_cached(cls, max_age: float = 2.0) -> RuntimeConfig:
        """The row as read at most ``max_age`` seconds ago in this process, for hot paths
        (webhook ingest) where a setting change may take a moment to apply."""
        import time

        cached = _RUNTIME_CONFIG_CACHE.get("config")
        now = time.monotonic()
        if cached is None or now - cached[0] > max_age:
            cached = (now, cls.get())
            _RUNTIME_CONFIG_CACHE["config"] = cached
        return cached[1]


_RUNTIME_CONFIG_CACHE: dict = {}


class AuditEvent(models.Model):
    """Who changed what, when: written in the same transaction as the change."""

    actor = models.CharField(max_length=150, help_text="Username, 'command:<name>' or 'system'.")
    action = models.CharField(max_length=80, db_index=True)
    target_type = models.CharField(max_length=80, blank=True)
    target_id = models.CharField(max_length=255, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.target_id}"
