"""Event webhooks to the host app (SPEC §15): one EventDelivery row per event and subscribed
API key, written in the transaction of the change it reports and sent by
``agents.consumer_api.event_sender``."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from agents.delivery_rows import DeliveryRow


class EventDelivery(DeliveryRow):
    PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"
    STATUS_CHOICES = [(s, s) for s in (PENDING, SENDING, DELIVERED, FAILED)]

    api_key = models.ForeignKey(
        "consumer_api.ApiKey", on_delete=models.CASCADE, related_name="event_deliveries"
    )
    event_id = models.CharField(max_length=40, help_text="The same for every key of one event.")
    event_type = models.CharField(max_length=40)
    agent_key = models.CharField(max_length=64, blank=True, help_text="Empty: every agent.")
    body = models.TextField(help_text="The exact JSON sent (and signed).")
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=PENDING)
    delivered_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    give_up_at = models.DateTimeField(
        help_text="Failed attempts are retried until then (24 h; reset by a manual retry)."
    )

    class Meta:
        ordering = ["-id"]
        verbose_name = "event delivery"
        verbose_name_plural = "event deliveries"
        constraints = [
            models.UniqueConstraint(fields=["api_key", "event_id"], name="event_once_per_key")
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="event_delivery_due_idx"),
            models.Index(fields=["status", "sending_since"], name="event_delivery_stuck_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} → key {self.api_key_id} ({self.status})"
