"""The outbox (SPEC §22): every Telegram message the server sends, one row per message, and
the per-bot sender state (429 pause, the lease that makes one sender per bot)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from agents.delivery_rows import DeliveryRow


class OutboxMessage(DeliveryRow):
    PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
    STATUS_CHOICES = [(s, s) for s in (PENDING, SENDING, SENT, FAILED)]
    REPLY, NOTICE, APOLOGY, OPERATOR = "reply", "notice", "apology", "operator"
    KIND_CHOICES = [(k, k) for k in (REPLY, NOTICE, APOLOGY, OPERATOR)]

    agent_key = models.CharField(max_length=64, help_text="Whose bot sends it.")
    chat_id = models.CharField(max_length=64)
    job = models.ForeignKey(
        "workers.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="outbox",
        help_text="The job whose reply (or apology) this is; empty for notices.",
    )
    # An operator's "send as the agent" (no job): the conversation page lists its rows.
    conversation = models.ForeignKey(
        "agents.Conversation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        help_text="Set for an operator's message sent as the agent.",
    )
    kind = models.CharField(max_length=10, choices=KIND_CHOICES, default=REPLY)
    part = models.PositiveSmallIntegerField(default=0)
    parts = models.PositiveSmallIntegerField(default=1)
    text = models.TextField()
    parse_mode = models.CharField(max_length=10, blank=True)
    plain_text = models.TextField(blank=True, help_text="Sent instead if the entities are refused.")
    reply_markup = models.JSONField(null=True, blank=True)
    media_kind = models.CharField(
        max_length=10, blank=True, help_text="photo, document, …: a file (text is its caption)."
    )
    media_upload = models.ForeignKey(
        "workers.ReplyUpload",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The worker's upload this row sends.",
    )
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=PENDING)
    sent_at = models.DateTimeField(null=True, blank=True)
    telegram_message_id = models.BigIntegerField(null=True, blank=True)
    sent_as_plain = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "kind", "part"],
                condition=Q(job__isnull=False),
                name="outbox_one_row_per_job_part",
            )
        ]
        indexes = [
            models.Index(fields=["agent_key", "status", "next_attempt_at"], name="outbox_due_idx"),
            models.Index(fields=["agent_key", "chat_id", "id"], name="outbox_chat_order_idx"),
            models.Index(fields=["status", "sending_since"], name="outbox_stuck_idx"),
            # The dashboard's newest failed rows, however many rows were sent.
            models.Index(fields=["-id"], condition=Q(status="failed"), name="outbox_failed_idx"),
            # The conversation page's operator messages (few rows: the others are null).
            models.Index(
                fields=["conversation", "-id"],
                condition=Q(conversation__isnull=False),
                name="outbox_conversation_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"outbox #{self.pk} → {self.agent_key}/{self.chat_id} ({self.status})"

    @property
    def is_group(self) -> bool:
        return self.chat_id.startswith("-")


class OutboxBot(models.Model):
    """Per-bot sender state: ``paused_until`` after a 429, ``sender_until`` the lease of
    the one sender that drains this bot's rows (so the pacing holds across processes)."""

    agent_key = models.CharField(max_length=64, unique=True)
    paused_until = models.DateTimeField(null=True, blank=True)
    sender_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.agent_key
