"""The outbox in the admin (SPEC §22): every message the server sends, filterable by status,
kind and bot, each failure with its reason; failed rows can be sent again."""

from __future__ import annotations

from django.contrib import admin, messages

from agents.admin_access import ReadOnlyAdminMixin
from telegram.admin_conversation import link_html
from telegram.outbox import retry_rows
from telegram.outbox_models import OutboxMessage


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "agent_key",
        "chat_id",
        "kind",
        "media_kind",
        "job_id",
        "conversation_link",
        "part_label",
        "status",
        "attempts",
        "stuck_retries",
        "last_error",
        "created_at",
        "sent_at",
    ]
    list_filter = ["status", "kind", "agent_key", "sent_as_plain"]
    search_fields = ["chat_id", "=job__id", "last_error"]
    list_select_related = ["conversation", "job__conversation"]
    date_hierarchy = "created_at"
    actions = ["retry_selected"]

    @admin.display(description="conversation")
    def conversation_link(self, row: OutboxMessage) -> str:
        """The conversation page of the row's job, or of an operator's message."""
        conversation = row.conversation or (row.job.conversation if row.job else None)
        return link_html(conversation.conversation_id if conversation else None)

    @admin.display(description="part")
    def part_label(self, row: OutboxMessage) -> str:
        return f"{row.part + 1}/{row.parts}"

    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm("telegram.change_outboxmessage")

    @admin.action(description="Send the selected failed messages again", permissions=["retry"])
    def retry_selected(self, request, queryset):
        count = retry_rows(
            list(queryset.values_list("pk", flat=True)), actor=request.user.get_username()
        )
        messages.success(request, f"{count} failed message(s) queued to be sent again.")
