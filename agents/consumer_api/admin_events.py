"""Event webhook deliveries in the admin (SPEC §15): what was sent to which key, when, with
which answer; filterable by status, type, tenant and key; failed ones can be sent again.
Read-only otherwise: the body is the signed event, never a secret."""

from __future__ import annotations

from django.contrib import admin, messages

from agents.admin_access import ReadOnlyAdminMixin
from agents.consumer_api.event_models import EventDelivery
from agents.consumer_api.event_sender import retry_deliveries


@admin.register(EventDelivery)
class EventDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "event_type",
        "event_id",
        "api_key",
        "agent_key",
        "status",
        "attempts",
        "response_status",
        "last_error",
        "created_at",
        "delivered_at",
        "next_attempt_at",
    ]
    list_filter = ["status", "event_type", "api_key__tenant", "api_key", "created_at"]
    list_select_related = ["api_key"]
    search_fields = ["=event_id", "agent_key", "last_error"]
    date_hierarchy = "created_at"
    actions = ["retry_selected_events"]

    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm("consumer_api.change_eventdelivery")

    @admin.action(description="Send the selected failed events again", permissions=["retry"])
    def retry_selected_events(self, request, queryset):
        count = retry_deliveries(
            list(queryset.values_list("pk", flat=True)),
            actor=f"admin:{request.user.get_username()}",
        )
        messages.success(request, f"{count} failed event(s) queued to be sent again.")
