"""API keys of host products (hashed by djangorestframework-api-key) and idempotency records."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager

from agents.models import AgentProfile, Tenant


class ApiKeyManager(BaseAPIKeyManager):
    def get_usable_keys(self):
        return super().get_usable_keys().select_related("tenant")


class ApiKey(AbstractAPIKey):
    """A tenant's key: read or read-write, optionally narrowed to some of its agents.

    The key itself is shown once, at creation; only its prefix and hash are stored.
    """

    objects = ApiKeyManager()

    READ, READ_WRITE = "read", "read_write"
    MODE_CHOICES = [(READ, "read"), (READ_WRITE, "read and write")]

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="api_keys")
    agents = models.ManyToManyField(
        AgentProfile,
        blank=True,
        related_name="api_keys",
        help_text="Empty: every agent of the tenant. Otherwise only these (others answer 404).",
    )
    mode = models.CharField(max_length=10, choices=MODE_CHOICES, default=READ_WRITE)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    webhook_url = models.URLField(max_length=500, blank=True)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    @property
    def read_only(self) -> bool:
        return self.mode == self.READ


class IdempotencyRecord(models.Model):
    """The first answer to a write sent with an ``Idempotency-Key`` header (kept 24 h)."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="sha256 of method, path and body.")
    status_code = models.PositiveSmallIntegerField()
    response = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_key_per_api_key")
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.status_code})"


from agents.consumer_api.event_models import EventDelivery  # noqa: E402,F401 (registered here)
