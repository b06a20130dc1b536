"""The queue, workers and snapshots in the admin (the index dashboard: workers/dashboard.py)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html

from agents.audit import actor_name, record_audit
from agents.models import Conversation
from workers import (
    admin_tasks,  # noqa: F401 (django-q2's task lists, resubmit guarded)
    admin_usage,  # noqa: F401 (usage records and the usage and cost report)
)
from workers.lifecycle import InvalidTransition, transition_worker
from workers.models import (
    DataSnapshot,
    DeadLetter,
    ExpiredLease,
    Message,
    MessageAttachment,
    Worker,
)
from workers.queue import requeue_dead_letters


def conversation_link(conversation) -> str:
    """A link to the conversation page (hung under the channel's admin, found by URL name:
    workers imports no channel app), or the plain id when there is none."""
    if conversation is None:
        return "-"
    try:
        url = reverse("admin:telegram_conversation", args=[conversation.conversation_id])
    except NoReverseMatch:
        return conversation.conversation_id
    return format_html('<a href="{}">{}</a>', url, conversation.conversation_id)


def confirm_page(model_admin, request, queryset, *, action: str, title: str):
    return TemplateResponse(
        request,
        "admin/telegram/confirm.html",
        {
            **model_admin.admin_site.each_context(request),
            "title": title,
            "action": action,
            "objects": queryset,
            "opts": model_admin.model._meta,
        },
    )


class AttachmentInline(admin.TabularInline):
    model = MessageAttachment
    extra = 0
    fields = ["kind", "status", "file_name", "mime_type", "size_bytes", "expires_at", "error"]
    readonly_fields = fields
    can_delete = False


class ConversationFilter(admin.SimpleListFilter):
    """Conversations with unfinished work (a full list would be unbounded)."""

    title = "conversation"
    parameter_name = "conversation"
    LIMIT = 30

    def lookups(self, request, model_admin):
        busy = Conversation.objects.filter(
            messages__status__in=[Message.QUEUED, Message.PROCESSING]
        ).distinct()
        return [(c.conversation_id, c.conversation_id) for c in busy.order_by("-id")[: self.LIMIT]]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(conversation__conversation_id=self.value())
        return queryset


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "conversation_page",
        "agent_key",
        "status",
        "priority",
        "attempts",
        "scheduled_for",
        "claimed_by",
        "lease_expires_at",
        "short_error",
    ]
    list_filter = ["status", "agent_key", ConversationFilter]
    search_fields = ["conversation__conversation_id", "agent_key", "claimed_by", "last_error"]
    list_select_related = ["conversation"]
    readonly_fields = [f.name for f in Message._meta.fields]
    inlines = [AttachmentInline]
    actions = ["requeue"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    @admin.display(description="Conversation", ordering="conversation")
    def conversation_page(self, obj):
        return conversation_link(obj.conversation)

    @admin.display(description="Last error")
    def short_error(self, obj):
        return (obj.last_error or "")[:80]

    def has_requeue_permission(self, request):
        # The change permission of Message itself, also on the proxy lists (DeadLetter):
        # a requeue changes Message rows whichever list it was started from.
        return request.user.has_perm("workers.change_message")

    @admin.action(
        description="Requeue selected dead letters (attempts reset)", permissions=["requeue"]
    )
    def requeue(self, request, queryset):
        queryset = queryset.filter(status=Message.DEAD_LETTER)
        if request.POST.get("confirm") != "yes":
            return confirm_page(
                self,
                request,
                queryset,
                action="requeue",
                title="Requeue these dead-lettered messages?",
            )
        count = requeue_dead_letters(
            list(queryset.values_list("pk", flat=True)), actor=actor_name(request.user)
        )
        self.message_user(request, f"{count} message(s) requeued.")
        return None


@admin.register(DeadLetter)
class DeadLetterAdmin(MessageAdmin):
    def get_queryset(self, request):
        return super().get_queryset(request).filter(status=Message.DEAD_LETTER)


@admin.register(ExpiredLease)
class ExpiredLeaseAdmin(MessageAdmin):
    actions = []

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .filter(status=Message.PROCESSING, lease_expires_at__lte=timezone.now())
        )


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = [
        "worker_id",
        "provider",
        "status",
        "status_reason",
        "machine",
        "heartbeat_age",
        "conversation_page",
        "load",
        "last_claim_at",
        "created_at",
    ]
    list_filter = ["status", "provider"]
    search_fields = ["worker_id", "machine_id", "assigned_conversation__conversation_id"]
    list_select_related = ["assigned_conversation"]
    exclude = ["token_hash", "token_prefix"]
    readonly_fields = [
        f.name for f in Worker._meta.fields if f.name not in ("token_hash", "token_prefix")
    ]
    actions = ["drain", "run_fly_cleanup"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="Assigned conversation", ordering="assigned_conversation")
    def conversation_page(self, obj):
        return conversation_link(obj.assigned_conversation)

    @admin.display(description="Machine")
    def machine(self, obj):
        if obj.machine_id:
            return f"{obj.machine_app or '-'}/{obj.machine_id} {obj.machine_region}".strip()
        return f"pid {obj.process_id}" if obj.process_id else "-"

    @admin.display(description="Heartbeat age")
    def heartbeat_age(self, obj):
        if not obj.heartbeat_at:
            return "never"
        return f"{int((timezone.now() - obj.heartbeat_at).total_seconds())} s"

    @admin.action(description="Drain selected workers", permissions=["change"])
    def drain(self, request, queryset):
        queryset = queryset.filter(status=Worker.ACTIVE)
        if request.POST.get("confirm") != "yes":
            return confirm_page(
                self,
                request,
                queryset,
                action="drain",
                title="Drain these workers? They finish their job and stop.",
            )
        drained = 0
        for worker in queryset:
            try:
                with transaction.atomic():  # the state change and its audit row together
                    transition_worker(worker, Worker.DRAINING, reason="drained by admin")
                    record_audit(actor_name(request.user), "worker.drain", worker)
            except InvalidTransition as exc:
                self.message_user(request, str(exc), messages.WARNING)
                continue
            drained += 1
        self.message_user(request, f"{drained} worker(s) draining.")
        return None

    def has_fly_cleanup_preview_permission(self, request):
        # Only a link to the Fly cleanup page: offered to whoever may open its preview (named
        # by string: workers never imports fly). Applying needs fly.run_cleanup there.
        perms = ("view_flycleanuprun", "change_flycleanuprun", "run_cleanup")
        return any(request.user.has_perm(f"fly.{perm}") for perm in perms)

    @admin.action(
        description="Run Fly cleanup (dry-run preview first)",
        permissions=["fly_cleanup_preview"],
    )
    def run_fly_cleanup(self, request, queryset):
        # The cleanup targets the whole app, not the selection: show its preview page.
        return redirect(reverse("admin:fly_cleanup_run"))


@admin.register(DataSnapshot)
class DataSnapshotAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "conversation_id",
        "agent_key",
        "worker_id",
        "reason",
        "status",
        "size_bytes",
        "created_at",
        "expires_at",
    ]
    list_filter = ["status", "reason", "agent_key"]
    search_fields = ["conversation_id", "worker_id", "sha256"]
    readonly_fields = [f.name for f in DataSnapshot._meta.fields]

    def has_add_permission(self, request):
        return False
