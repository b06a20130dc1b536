"""A conversation and its history (SPEC §6): one row a conversation, one row a history
entry, so history never becomes an ever-growing blob."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Conversation(models.Model):
    conversation_id = models.CharField(max_length=255, unique=True)
    agent = models.ForeignKey(
        "agents.AgentProfile", on_delete=models.PROTECT, related_name="conversations"
    )
    pending_tool_calls = models.JSONField(default=list, blank=True)
    hydration_cache = models.JSONField(default=dict, blank=True)
    hydration_fingerprint = models.CharField(max_length=64, blank=True)
    # Handoff (SPEC §6.2): released by a live worker (drain, fair-share reassignment) that is
    # still writing its snapshot of it. Until that snapshot is finalized or failed, or until
    # ``handoff_until``, no other worker may claim here (it would restore an older snapshot).
    # The worker id is a plain string: agents depends on no other app.
    handoff_from_worker = models.CharField(max_length=100, blank=True)
    handoff_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            # Finding a worker's pending handoffs (snapshot stored, worker stopped): a
            # partial index, tiny since handoffs are few and short.
            models.Index(
                fields=["handoff_from_worker"],
                condition=~models.Q(handoff_from_worker=""),
                name="conv_handoff_worker_idx",
            )
        ]

    def __str__(self) -> str:
        return self.conversation_id

    def in_handoff_for(self, worker_id: str, now) -> bool:
        """Whether a claim by ``worker_id`` must wait for another worker's snapshot."""
        return (
            self.handoff_until is not None
            and self.handoff_until > now
            and self.handoff_from_worker != worker_id
        )


class ConversationEntry(models.Model):
    """One history entry; a related table so history never becomes an ever-growing blob."""

    ROLE_CHOICES = [(r, r) for r in ("system", "user", "assistant", "tool")]

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="entries")
    role = models.CharField(max_length=10, choices=ROLE_CHOICES)
    content = models.TextField()
    at = models.DateTimeField(default=timezone.now)
    # The queue message that produced the entry, so a retried append is not stored twice.
    source_message_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["conversation", "at", "id"]
        indexes = [models.Index(fields=["conversation", "-at", "-id"], name="entry_history_idx")]
        verbose_name_plural = "conversation entries"

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"
