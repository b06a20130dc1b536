"""Admin for the ground floor: profiles, secrets (write-only), runtime config, audit trail."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from agents import (
    admin_skills,  # noqa: F401 (registers the skills lists)
    budget,
)
from agents.admin_access import ReadOnlyAdminMixin, require
from agents.admin_audited import AuditedModelAdmin
from agents.admin_runtime import (
    PROFILE_FIELDSETS,
    AgentProfileAdminForm,
    describe_model_key,
    save_profile_with_key,
)
from agents.audit import actor_name
from agents.models import (
    AgentProfile,
    AuditEvent,
    Conversation,
    ConversationEntry,
    RuntimeConfig,
    Secret,
)
from agents.secret_store import SecretStoreError, import_secret, validate_secret_input
from agents.services import save_runtime_config


@admin.register(AgentProfile)
class AgentProfileAdmin(AuditedModelAdmin):
    form = AgentProfileAdminForm
    fieldsets = PROFILE_FIELDSETS
    list_display = [
        "agent_key",
        "enabled",
        "require_telegram_binding",
        "handler",
        "budget_this_month",
        "version",
        "updated_at",
        "onboarding",
    ]
    list_filter = ["enabled", "require_telegram_binding", "handler"]
    search_fields = ["agent_key"]
    readonly_fields = ["version", "created_at", "updated_at", "model_key_state"]
    audit_prefix = "agent"  # the same action names as configure_agent

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            month_spend=budget.month_spend_subquery(timezone.now())
        )

    @admin.display(description="Budget this month (UTC)")
    def budget_this_month(self, obj):
        return budget.describe(obj.monthly_budget_usd, getattr(obj, "month_spend", None))

    def changelist_view(self, request, extra_context=None):
        # SPEC §24: the 80 % warning and the pause are visible where agents are managed
        # (to whoever may see the list: Django's own check refuses the others below).
        allowed = self.has_view_or_change_permission(request)
        for row in budget.overview(timezone.now()) if allowed else []:
            if row["state"] in ("warning", "paused"):
                messages.warning(
                    request,
                    f"Budget {row['state']}: {row['label']} spent ${row['spent']} of "
                    f"${row['cap']} this month ({row['percent']} %).",
                )
        return super().changelist_view(request, extra_context)

    @admin.display(description="Model key")
    def model_key_state(self, obj):
        return describe_model_key(obj)

    @admin.display(description="Telegram")
    def onboarding(self, obj):
        # Resolved by name: the telegram app stands above agents and registers the page.
        try:
            url = reverse("admin:telegram_onboarding", args=[obj.pk])
        except NoReverseMatch:
            return "-"
        return format_html('<a href="{}">onboarding</a>', url)

    def save_model(self, request, obj, form, change):
        # The same rule as configure_agent: version bump on a real change, audit row; a
        # typed model key becomes a new secret version in the same transaction.
        save_profile_with_key(obj, form, actor=actor_name(request.user), created=not change)


class SecretAdminForm(forms.ModelForm):
    """The value is write-only: it is typed in, encrypted, and never shown again."""

    value = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted as a new version; the value is never displayed.",
        strip=False,
    )

    class Meta:
        model = Secret
        fields = ["secret_ref"]

    def clean(self):
        cleaned = super().clean()
        ref, value = cleaned.get("secret_ref"), cleaned.get("value")
        if ref and value is not None:
            # The store's own rules (empty, too large), shown on the form instead of a
            # half-finished save; the messages never contain the value.
            try:
                validate_secret_input(ref, value)
            except SecretStoreError as exc:
                raise forms.ValidationError(str(exc))
        return cleaned


@admin.register(Secret)
class SecretAdmin(AuditedModelAdmin):
    form = SecretAdminForm
    list_display = ["secret_ref", "version", "active", "key_id", "updated_at"]
    list_filter = ["active", "key_id"]
    search_fields = ["secret_ref"]
    ordering = ["secret_ref", "-version"]
    audit_prefix = "secret"

    @admin.display(description="New value")
    def set_new_value(self, obj):
        # Versions are immutable: a new value is a new version, made on the add form.
        url = reverse("admin:agents_secret_add") + "?" + urlencode({"secret_ref": obj.secret_ref})
        return format_html('<a href="{}">Set a new value (creates a new version)</a>', url)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["secret_ref", "value"]
        return [
            "secret_ref",
            "version",
            "active",
            "key_id",
            "algorithm",
            "metadata",
            "created_at",
            "updated_at",
            "set_new_value",
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return self.get_fields(request, obj)

    def get_form(self, request, obj=None, **kwargs):
        if obj is not None:
            kwargs["form"] = forms.ModelForm
        return super().get_form(request, obj, **kwargs)

    def has_change_permission(self, request, obj=None):
        # Existing versions are immutable; a new value is a new version (the add form).
        return (
            False
            if obj is not None and request.method == "POST"
            else super().has_change_permission(request, obj)
        )

    def save_model(self, request, obj, form, change):
        # A new version through the store (which audits it); existing rows never change.
        try:
            secret = import_secret(
                form.cleaned_data["secret_ref"],
                form.cleaned_data["value"],
                actor=actor_name(request.user),
                metadata={"source": "admin"},
            )
        except SecretStoreError as exc:
            messages.error(request, str(exc))
            return
        obj.pk = secret.pk
        obj.version = secret.version
        obj.active = secret.active

    def log_addition(self, request, obj, message):
        if obj.pk is not None:  # the import failed and said so; there is nothing to log
            return super().log_addition(request, obj, message)
        return None

    def response_add(self, request, obj, post_url_continue=None):
        if obj.pk is None:
            return redirect(reverse("admin:agents_secret_add"))
        return super().response_add(request, obj, post_url_continue)

    def audit_delete_details(self, obj) -> dict:
        return {"secret_ref": obj.secret_ref, "version": obj.version, "was_active": obj.active}


@admin.register(RuntimeConfig)
class RuntimeConfigAdmin(AuditedModelAdmin):
    fieldsets = [
        (
            "Provider",
            {
                "fields": [
                    "provider_kind",
                    "app_name",
                    "organization_slug",
                    "image",
                    "region",
                    "fallback_regions",
                    "volume_name",
                    "volume_path",
                    "volume_size_gb",
                    "guest_cpus",
                    "guest_memory_mb",
                    "fly_cleanup_nightly",
                ]
            },
        ),
        ("Messages", {"fields": ["system_prompt", "telegram_attachment_retention_seconds"]}),
        (
            "Scaling and leases",
            {
                "fields": [
                    "max_workers",
                    "spawn_step",
                    "idle_timeout_seconds",
                    "lease_seconds",
                    "stale_after_seconds",
                    "reassign_after_seconds",
                    "handoff_timeout_seconds",
                    "snapshot_timeout_seconds",
                    "snapshot_retention_seconds",
                ]
            },
        ),
        (
            "Retries",
            {"fields": ["max_attempts", "retry_base_seconds", "retry_factor", "retry_max_seconds"]},
        ),
        (
            "Quotas",
            {
                "fields": [
                    "user_rate_per_minute",
                    "user_burst",
                    "conversation_queue_cap",
                    "history_entries_per_job",
                    "history_bytes_per_job",
                    "snapshot_prepares_per_minute",
                ]
            },
        ),
        ("Budget (all agents together)", {"fields": ["monthly_budget_usd"]}),
    ]

    def has_add_permission(self, request):
        # The one row (pk=1) is created by RuntimeConfig.get(), which the list page calls.
        return False

    def save_model(self, request, obj, form, change):
        # The same rule as configure_runtime: validate, save, one audit row per change.
        save_runtime_config(obj, actor=actor_name(request.user), changed=form.changed_data)

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        # Django's own check is bypassed by this override; without it a staff user with no
        # permission on the config would still have the row created (RuntimeConfig.get()).
        require(
            request,
            self.has_view_or_change_permission(request),
            door="runtime_config",
            permission="agents.view_runtimeconfig",
        )
        config = RuntimeConfig.get()
        return redirect(reverse("admin:agents_runtimeconfig_change", args=[config.pk]))


class ConversationEntryInline(admin.TabularInline):
    model = ConversationEntry
    extra = 0
    fields = ["at", "role", "content", "source_message_id"]
    readonly_fields = fields
    can_delete = False
    ordering = ["-at", "-id"]
    max_num = 0


@admin.register(Conversation)
class ConversationAdmin(AuditedModelAdmin):
    list_display = ["conversation_id", "agent", "created_at", "updated_at"]
    list_filter = ["agent"]
    list_select_related = ["agent"]
    search_fields = ["conversation_id"]
    # The handoff (SPEC §6.2) is shown, never edited: the claim and the snapshots own it.
    readonly_fields = [
        "conversation_id",
        "agent",
        "handoff_from_worker",
        "handoff_until",
        "created_at",
        "updated_at",
    ]
    exclude = ["hydration_cache", "hydration_fingerprint"]
    inlines = [ConversationEntryInline]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "actor", "action", "target_type", "target_id"]
    list_filter = ["action", "target_type"]
    search_fields = ["actor", "action", "target_id"]
    date_hierarchy = "created_at"
    deletable = False
