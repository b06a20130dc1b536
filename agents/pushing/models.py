"""Push templates, push jobs and their dispatches, broadcasts with one row per target, and
message templates with usage counts (SPEC §3, §14).

Targets are stored as plain values (consumer user, conversation, Telegram chat) resolved
when a run is claimed, not as foreign keys into ``telegram``: a revoked binding must not
rewrite the history of what was sent, and the tables stay independent of ingress.
"""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.timezone import now

from agents.models import AgentProfile, Tenant, default_tenant_id

PERIODICITIES = ["manual", "daily", "weekly", "monthly"]
PERIODICITY_CHOICES = [(p, p) for p in PERIODICITIES]


def tenant_field(related_name: str, **kwargs):
    """Consumer user ids, template keys and slugs are unique per tenant (SPEC §15)."""
    return models.ForeignKey(
        Tenant, on_delete=models.PROTECT, related_name=related_name, **kwargs
    )


def template_agent_field(related_name: str):
    return models.ForeignKey(
        AgentProfile,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name=related_name,
        help_text="Empty: the whole tenant's. Set: only keys that see this agent see it.",
    )


class PushTemplate(models.Model):
    """A reusable push text with suggested slots; a job copies it (later edits don't
    change jobs already made from it)."""

    tenant = tenant_field("push_templates", default=default_tenant_id)
    agent = template_agent_field("push_templates")
    key = models.SlugField(max_length=100, help_text="Unique within the tenant.")
    title = models.CharField(max_length=200)
    text = models.TextField()
    periodicity = models.CharField(max_length=10, choices=PERIODICITY_CHOICES)
    suggested_times = models.JSONField(
        default=list, blank=True, help_text='Slots like {"time": "08:00", "weekday": 1}.'
    )
    enabled = models.BooleanField(default=True)
    created_by = models.CharField(max_length=150, blank=True)
    updated_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key", "id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key"], name="pushtemplate_key_per_tenant"),
        ]

    def __str__(self) -> str:
        return self.key


class PushJob(models.Model):
    """One recurring (or manual) push: to one consumer user, or to every bound user of an
    agent. Slots are computed in the job's IANA timezone (``schedule.next_run_after``)."""

    USER, AGENT_USERS = "user", "agent_users"
    TARGET_CHOICES = [(USER, "one consumer user"), (AGENT_USERS, "all bound users of an agent")]

    tenant = tenant_field("push_jobs", default=default_tenant_id)
    target = models.CharField(max_length=12, choices=TARGET_CHOICES, default=USER)
    consumer_user_id = models.CharField(
        max_length=255, blank=True, help_text="The user (target 'user'); empty otherwise."
    )
    agent = models.ForeignKey(
        AgentProfile,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="push_jobs",
        help_text="Target 'agent_users': whose users. Target 'user': informational only.",
    )
    source_template = models.ForeignKey(
        PushTemplate, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    title = models.CharField(max_length=200, blank=True)
    text = models.TextField()
    periodicity = models.CharField(max_length=10, choices=PERIODICITY_CHOICES)
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA name.")
    time = models.CharField(max_length=5, blank=True, help_text="HH:mm (local).")
    weekday = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(7)],
        help_text="Weekly: 1 = Monday … 7 = Sunday.",
    )
    day_of_month = models.CharField(
        max_length=4, blank=True, help_text="Monthly: 1–31 (clamped to month end) or 'last'."
    )
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_run_key = models.CharField(max_length=100, blank=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [
            # The dispatcher's scan: enabled jobs by next run (manual jobs have none).
            models.Index(
                fields=["next_run_at"],
                condition=models.Q(enabled=True, next_run_at__isnull=False),
                name="pushjob_due_idx",
            ),
            models.Index(fields=["tenant", "consumer_user_id"], name="pushjob_tenant_consumer_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(target="user", consumer_user_id__gt="")
                | models.Q(target="agent_users", agent__isnull=False),
                name="pushjob_target_complete",
            ),
        ]

    def __str__(self) -> str:
        who = self.consumer_user_id if self.target == self.USER else f"users of {self.agent}"
        return f"#{self.pk} {self.title or self.text[:30]} → {who}"

    @property
    def schedule(self) -> dict:
        """The slot as SPEC §15 writes it: {} / {"time"} / {"weekday","time"} / {"day","time"}."""
        if self.periodicity == "weekly":
            return {"weekday": self.weekday, "time": self.time}
        if self.periodicity == "monthly":
            day = self.day_of_month
            return {"day": day if day == "last" else int(day), "time": self.time}
        return {"time": self.time} if self.periodicity == "daily" else {}


class PushTargetFields(models.Model):
    """Where one push goes and what became of it: enqueued (with the queue message id),
    failed (with the reason), or pending until the drain enqueues it."""

    PENDING, ENQUEUED, FAILED = "pending", "enqueued", "failed"
    SKIPPED = "skipped"  # not sent on purpose: the agent's budget is spent (SPEC §24)

    # Always set by the code that makes the row (the job's or the binding's tenant); a
    # column, not a join, so two tenants' users with the same id never mix in stats.
    tenant = tenant_field("+", null=True, blank=True)
    consumer_user_id = models.CharField(max_length=255, blank=True)
    agent = models.ForeignKey(
        AgentProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    conversation_id = models.CharField(max_length=255, blank=True)
    telegram_user_id = models.CharField(max_length=32, blank=True)
    telegram_chat_id = models.CharField(max_length=32, blank=True)
    bot_identity = models.CharField(max_length=32, blank=True)
    # The queue row (workers.Message) — a plain id: queue rows are pruned on their own.
    message_id = models.BigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=now, editable=False)
    enqueued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class PushDispatch(PushTargetFields):
    """One run of a job: unique per (job, run key) — the database, not a lookup, makes a
    slot fire once however many dispatchers run."""

    BROADCAST = "broadcast"  # an agent_users job: the targets are the broadcast's rows
    STATUS_CHOICES = [
        (s, s)
        for s in (
            PushTargetFields.PENDING,
            PushTargetFields.ENQUEUED,
            PushTargetFields.FAILED,
            PushTargetFields.SKIPPED,
        )
    ] + [(BROADCAST, "broadcast (see its targets)")]
    MODE_CHOICES = [("scheduled", "scheduled"), ("manual", "manual")]

    job = models.ForeignKey(PushJob, on_delete=models.CASCADE, related_name="dispatches")
    run_key = models.CharField(max_length=100)
    mode = models.CharField(max_length=10, choices=MODE_CHOICES, default="scheduled")
    scheduled_for = models.DateTimeField(help_text="The slot (scheduled) or the trigger time.")
    missed_slots = models.PositiveIntegerField(
        default=0, help_text="Earlier slots passed over while the dispatcher was not running."
    )
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default="pending")
    broadcast = models.OneToOneField(
        "PushBroadcast", null=True, blank=True, on_delete=models.SET_NULL, related_name="dispatch"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "push dispatches"
        constraints = [
            models.UniqueConstraint(fields=["job", "run_key"], name="pushdispatch_job_run_key"),
        ]
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=models.Q(status="pending"),
                name="pushdispatch_pending_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run_key} ({self.status})"


class PushBroadcast(models.Model):
    """A push to every active binding of some agents (all enabled agents when none are
    named): one PushBroadcastDispatch row per bound user, each a queue job of its own."""

    tenant = tenant_field(
        "push_broadcasts",
        null=True,
        blank=True,
        help_text="Whose agents; empty for an operator's broadcast over several tenants.",
    )
    title = models.CharField(max_length=200, blank=True)
    text = models.TextField()
    agent_keys = models.JSONField(default=list, blank=True, help_text="Empty: every agent.")
    requested_by = models.CharField(max_length=150, blank=True)
    requested_at = models.DateTimeField(default=now)
    total_targets = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self) -> str:
        return f"Broadcast #{self.pk}: {self.title or self.text[:30]}"


class PushBroadcastDispatch(PushTargetFields):
    STATUS_CHOICES = [
        (s, s)
        for s in (
            PushTargetFields.PENDING,
            PushTargetFields.ENQUEUED,
            PushTargetFields.FAILED,
            PushTargetFields.SKIPPED,
        )
    ]

    broadcast = models.ForeignKey(PushBroadcast, on_delete=models.CASCADE, related_name="targets")
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default="pending")

    class Meta:
        ordering = ["broadcast", "id"]
        verbose_name_plural = "push broadcast dispatches"
        constraints = [
            # One row per user of a tenant: an operator's broadcast may reach two tenants'
            # users with the same consumer id (two people).
            models.UniqueConstraint(
                fields=["broadcast", "tenant", "consumer_user_id"],
                name="pushbroadcast_one_per_tenant_user",
            ),
        ]
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=models.Q(status="pending"),
                name="pushbroadcastdispatch_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.consumer_user_id} ({self.status})"


class MessageTemplate(models.Model):
    """A reusable one-shot message; ``usage_count`` counts the sends (SPEC §14)."""

    tenant = tenant_field("message_templates", default=default_tenant_id)
    agent = template_agent_field("message_templates")
    slug = models.SlugField(max_length=100, help_text="Unique within the tenant.")
    title = models.CharField(max_length=200)
    text = models.TextField(help_text="May name variables as {{name}}, filled at send time.")
    tags = models.JSONField(default=list, blank=True)
    usage_count = models.PositiveIntegerField(default=0, editable=False)
    enabled = models.BooleanField(default=True)
    created_by = models.CharField(max_length=150, blank=True)
    updated_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-usage_count", "slug", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "slug"], name="messagetemplate_slug_per_tenant"
            ),
        ]

    def __str__(self) -> str:
        return self.slug
