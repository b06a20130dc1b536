"""The message queue, workers and snapshots (SPEC §3, §6–10)."""

from __future__ import annotations

import datetime as dt

from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from agents.models import Conversation

# The order in which ready messages are claimed (SPEC §6.2), over the whole queue and within
# one conversation alike. The partial indexes below are built in this order.
CLAIM_ORDER = ("-priority", "scheduled_for", "id")


class MessageQuerySet(models.QuerySet):
    """The queue's rules, spelled once: claims, sweeps, reconcile, fair share and the admin
    all build their queries from these."""

    def ready(self, now: dt.datetime):
        """Waiting and due: what a claim may take."""
        return self.filter(status=Message.QUEUED, scheduled_for__lte=now)

    def in_claim_order(self):
        return self.order_by(*CLAIM_ORDER)

    def with_live_lease(self, now: dt.datetime):
        """Processing under a lease that has not run out: its conversation is busy."""
        return self.filter(status=Message.PROCESSING, lease_expires_at__gt=now)

    def with_lost_lease(self, now: dt.datetime):
        """Processing with an expired lease, or with lease data missing: the sweeper's."""
        return self.filter(status=Message.PROCESSING).filter(
            Q(lease_expires_at__lte=now)
            | Q(lease_expires_at__isnull=True)
            | Q(lease_id="")
            | Q(claimed_by="")
        )

    def outside_busy_conversations(self, now: dt.datetime):
        """Drop messages whose conversation has a live lease (at most one job at a time)."""
        leased = Message.objects.with_live_lease(now).filter(
            conversation_id=OuterRef("conversation_id")
        )
        return self.exclude(Exists(leased))

    def outside_conversations_of(self, workers):
        """Drop messages whose conversation is assigned to one of ``workers`` (a Worker
        queryset, typically the live ones but the caller)."""
        owned = workers.filter(assigned_conversation=OuterRef("conversation_id"))
        return self.exclude(Exists(owned))

    def claim_candidates(self, now: dt.datetime, owners):
        """Ready messages a worker may take, best first (SPEC §6.2): over the whole queue,
        skipping conversations with a live lease or assigned to one of ``owners`` (the live
        workers other than the claimer)."""
        return (
            self.ready(now)
            .outside_busy_conversations(now)
            .outside_conversations_of(owners)
            .in_claim_order()
        )


class WorkerQuerySet(models.QuerySet):
    def live(self, cutoff: dt.datetime):
        """May claim, and heard from since ``cutoff`` (``lifecycle.live_worker_cutoff``):
        the one definition of a live worker for claims, sweeps, reconcile and fair share."""
        return self.filter(status=Worker.ACTIVE, heartbeat_at__gte=cutoff)


class Message(models.Model):
    """One queued job: a user message for the agent of one conversation."""

    QUEUED, PROCESSING, DONE, FAILED, DEAD_LETTER = (
        "queued",
        "processing",
        "done",
        "failed",
        "dead_letter",
    )
    STATUS_CHOICES = [(s, s) for s in (QUEUED, PROCESSING, DONE, FAILED, DEAD_LETTER)]

    # No index of their own: the composite indexes below lead with the conversation, and
    # every extra index is written again on each claim, heartbeat and completion.
    conversation = models.ForeignKey(
        Conversation, on_delete=models.PROTECT, related_name="messages", db_index=False
    )
    agent_key = models.CharField(max_length=64)
    payload = models.JSONField()
    status = models.CharField(max_length=12, choices=STATUS_CHOICES, default=QUEUED)
    priority = models.PositiveSmallIntegerField(default=50)
    scheduled_for = models.DateTimeField(default=timezone.now)
    claimed_by = models.CharField(max_length=100, blank=True)
    lease_id = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    last_error = models.TextField(blank=True)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    dead_lettered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # When the user was told this job failed for good (SPEC §22): set once, so a requeued
    # dead letter that dies again never apologises twice.
    apologized_at = models.DateTimeField(null=True, blank=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            # Claim: the ready queue in claim order, as a partial index so it stays small
            # however many done rows pile up.
            models.Index(
                fields=["-priority", "scheduled_for", "id"],
                condition=models.Q(status="queued"),
                name="msg_ready_queue_idx",
            ),
            # Claim for a worker warm on one conversation: its ready messages in claim
            # order, read straight off the index (no sort), however long the queue is.
            models.Index(
                fields=["conversation", "-priority", "scheduled_for", "id"],
                condition=models.Q(status="queued"),
                name="msg_conversation_ready_idx",
            ),
            # Claim restricted to one conversation, and "is anything processing here?".
            models.Index(fields=["conversation", "status"], name="msg_conversation_status_idx"),
            # Dashboard, admin and the lease sweeper (processing rows are few: one per live
            # worker at most). No index holds lease_expires_at, so a heartbeat (which only
            # moves the lease) is a HOT update that rewrites no index on PostgreSQL.
            models.Index(fields=["status", "created_at"], name="msg_status_created_idx"),
            # Admin filter by agent (a plain index: no LIKE searches on it).
            models.Index(fields=["agent_key"], name="msg_agent_key_idx"),
        ]

    def __str__(self) -> str:
        return f"Message {self.pk} ({self.status}) in {self.conversation_id}"

    def has_live_lease(self, now: dt.datetime) -> bool:
        """This row as ``Message.objects.with_live_lease(now)`` would judge it."""
        return (
            self.status == Message.PROCESSING
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )


class ConversationQueue(models.Model):
    """Where one conversation stands in the queue, so an unassigned worker's claim finds the
    best free conversation through one small index instead of walking every ready message
    of the busy conversations ahead of it (issue 11 item 8).

    Kept by database triggers on ``workers_message`` (migration 0009), so every write path —
    the services, admin actions, bulk updates, raw SQL, tests — keeps it right in the
    writer's own transaction. It is a derived index, never a source of truth: the claim
    still checks every rule on the messages themselves (``Message.objects.claim_candidates``).

    - ``busy``: some message of the conversation is processing.
    - ``busy_until``: the lease its claim handed out. A heartbeat moves the real lease later
      without touching this row, so it never runs past the real one: while it is ahead of
      now the conversation is certainly busy; once it is behind (or null) the claim looks.
    - ``head_*``: the conversation's first queued message in claim order (due or not).
    """

    conversation = models.OneToOneField(
        Conversation, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    busy = models.BooleanField(default=False)
    busy_until = models.DateTimeField(null=True, blank=True)
    head_id = models.BigIntegerField(null=True, blank=True)
    head_priority = models.PositiveSmallIntegerField(null=True, blank=True)
    head_scheduled_for = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The free conversations in the claim order of their first message.
            models.Index(
                fields=["-head_priority", "head_scheduled_for", "head_id"],
                condition=models.Q(busy=False, head_id__isnull=False),
                name="convq_free_idx",
            ),
            # Free conversations whose first message is not due yet (a retry's backoff, a
            # scheduled push): a due message of lower priority may wait behind it.
            models.Index(
                fields=["head_scheduled_for"],
                condition=models.Q(busy=False, head_id__isnull=False),
                name="convq_free_due_idx",
            ),
            # Busy conversations whose lease may have run out.
            models.Index(
                fields=["busy_until"], condition=models.Q(busy=True), name="convq_busy_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"Queue position of conversation {self.conversation_id}"


class MessageAttachment(models.Model):
    KIND_CHOICES = [(k, k) for k in ("photo", "video", "audio", "voice", "document")]
    READY, EXPIRED, PENDING, FAILED = "ready", "expired", "pending", "failed"
    STATUS_CHOICES = [(s, s) for s in (PENDING, READY, EXPIRED, FAILED)]

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    kind = models.CharField(max_length=10, choices=KIND_CHOICES)
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=READY)
    file = models.FileField(upload_to="attachments/%Y/%m/%d/", blank=True)
    telegram_file_id = models.CharField(max_length=255, blank=True)
    file_name = models.CharField(max_length=255, blank=True)
    mime_type = models.CharField(max_length=100, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.kind} for message {self.message_id}"


class Worker(models.Model):
    """One worker process or machine. Lifecycle: active → draining → stopping → stopped."""

    ACTIVE, DRAINING, STOPPING, STOPPED = "active", "draining", "stopping", "stopped"
    STATUS_CHOICES = [(s, s) for s in (ACTIVE, DRAINING, STOPPING, STOPPED)]

    worker_id = models.CharField(max_length=100, unique=True)
    provider = models.CharField(max_length=10, default="none")
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=ACTIVE, db_index=True)
    status_reason = models.CharField(max_length=200, blank=True)
    # Where it runs: a Fly machine (app, machine id, region, volume) or a local pid.
    machine_app = models.CharField(max_length=100, blank=True)
    machine_id = models.CharField(max_length=100, blank=True)
    machine_region = models.CharField(max_length=20, blank=True)
    volume_id = models.CharField(max_length=100, blank=True)
    process_id = models.PositiveIntegerField(null=True, blank=True)
    load = models.PositiveIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_claim_at = models.DateTimeField(null=True, blank=True)
    # When its last job ended (or it was given its conversation): with load 0, how long it
    # has been idle, which decides who gives up its conversation first (fair share, §6.2).
    idle_since = models.DateTimeField(null=True, blank=True)
    scheduled_shutdown_at = models.DateTimeField(null=True, blank=True)
    draining_since = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    last_snapshot = models.ForeignKey(
        "DataSnapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Assignment: one warm workspace per conversation (SPEC §6.2).
    assigned_conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.SET_NULL, related_name="workers"
    )
    assigned_agent_key = models.CharField(max_length=64, blank=True)
    assigned_lease_id = models.CharField(max_length=64, blank=True)
    assigned_at = models.DateTimeField(null=True, blank=True)
    capabilities = models.JSONField(default=dict, blank=True)
    last_error = models.TextField(blank=True)
    # Bearer token: only a keyed hash is stored; the plaintext is shown once.
    token_prefix = models.CharField(max_length=16, blank=True, db_index=True)
    token_hash = models.CharField(max_length=64, blank=True)
    token_revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "assigned_conversation"], name="worker_status_conv_idx")
        ]

    def __str__(self) -> str:
        return self.worker_id


class DataSnapshot(models.Model):
    UPLOADING, READY, FAILED, EXPIRED = "uploading", "ready", "failed", "expired"
    STATUS_CHOICES = [(s, s) for s in (UPLOADING, READY, FAILED, EXPIRED)]
    REASON_CHOICES = [(r, r) for r in ("drain", "signal", "manual")]

    workspace_id = models.CharField(max_length=100, default="default")
    agent_key = models.CharField(max_length=64)
    worker_id = models.CharField(max_length=100)
    conversation_id = models.CharField(max_length=255)
    reason = models.CharField(max_length=10, choices=REASON_CHOICES)
    format_version = models.CharField(max_length=40, default="tar.gz-v1")
    archive = models.FileField(upload_to="snapshots/%Y/%m/%d/", blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=UPLOADING)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["workspace_id", "agent_key", "conversation_id", "status", "-created_at"],
                name="snapshot_restore_idx",
            ),
            models.Index(fields=["status", "expires_at"], name="snapshot_expiry_idx"),
            # The prepare rate per worker (SPEC §23): its snapshots of the last minute.
            models.Index(fields=["worker_id", "-created_at"], name="snapshot_worker_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"Snapshot {self.pk} of {self.conversation_id} ({self.status})"


class JobUsage(models.Model):
    """Tokens and cost of one attempt of one job (SPEC §21): a row per complete or fail that
    reported usage, so failed attempts count too. Summed by ``workers.usage``."""

    DONE, FAILED = "done", "failed"
    OUTCOME_CHOICES = [(DONE, DONE), (FAILED, FAILED)]

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="usage_records")
    agent_key = models.CharField(max_length=64)
    # The consumer user of a bound sender, else "<provider>:<provider user id>".
    consumer_user = models.CharField(max_length=255)
    model = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    # True when the handler reported the cost, False when computed from the agent's prices.
    cost_reported = models.BooleanField(default=False)
    outcome = models.CharField(max_length=6, choices=OUTCOME_CHOICES)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "usage record"
        verbose_name_plural = "usage records"
        indexes = [
            models.Index(fields=["agent_key", "created_at"], name="usage_agent_day_idx"),
            models.Index(fields=["consumer_user", "created_at"], name="usage_user_day_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.input_tokens}+{self.output_tokens} tokens for message {self.message_id}"


# Admin lists of one slice of the queue each (their own pages and permissions).
class DeadLetter(Message):
    class Meta:
        proxy = True
        verbose_name = "dead-lettered message"


class ExpiredLease(Message):
    class Meta:
        proxy = True
        verbose_name = "message with an expired lease"
        verbose_name_plural = "messages with an expired lease"


class ReplyUpload(models.Model):
    """A file a worker uploaded for its job's reply (SPEC §7 ``jobs/<id>/uploads/``, §22):
    ``uploaded`` until the job's complete references it (``attached``), ``sent`` once the
    outbox delivered it, ``expired`` when the sweep deleted its file."""

    KIND_CHOICES = [(k, k) for k in ("photo", "document", "audio", "voice", "video")]
    UPLOADED, ATTACHED, SENT, EXPIRED = "uploaded", "attached", "sent", "expired"
    STATUS_CHOICES = [(s, s) for s in (UPLOADED, ATTACHED, SENT, EXPIRED)]

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reply_uploads")
    worker_id = models.CharField(max_length=64)
    lease_id = models.CharField(max_length=64, help_text="The lease it was uploaded under.")
    kind = models.CharField(max_length=10, choices=KIND_CHOICES)
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=UPLOADED)
    file = models.FileField(upload_to="reply_uploads/%Y/%m/%d/", blank=True)
    file_name = models.CharField(max_length=255)
    mime_type = models.CharField(max_length=100, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["status", "created_at"], name="reply_upload_sweep_idx")]

    def __str__(self) -> str:
        return f"{self.kind} upload {self.pk} for message {self.message_id}"
