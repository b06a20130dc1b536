"""Consumer API keys in the admin: created here (the key is shown once), revoked here."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from agents.admin_access import ReadOnlyAdminMixin, confirmation_page
from agents.admin_audited import AuditedModelAdmin
from agents.audit import record_audit
from agents.consumer_api.models import ApiKey, IdempotencyRecord
from agents.consumer_api.webhooks import WebhookUrlError, set_webhook, validate_webhook_url
from agents.models import Tenant

# The library's own concrete key model is unused here: only ours (tenant, scope, mode) is.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


class HttpsURLField(forms.URLField):
    def __init__(self, **kwargs):
        kwargs.setdefault("assume_scheme", "https")  # a bare host means https
        super().__init__(**kwargs)


class ApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["name", "tenant", "agents", "mode", "webhook_url", "expiry_date", "revoked"]
        field_classes = {"webhook_url": HttpsURLField}

    def clean_webhook_url(self):
        try:
            return validate_webhook_url(self.cleaned_data.get("webhook_url") or "")
        except WebhookUrlError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self):
        data = super().clean()
        tenant, agents = data.get("tenant"), data.get("agents")
        if tenant and agents:
            foreign = [a.agent_key for a in agents if a.tenant_id != tenant.pk]
            if foreign:
                self.add_error("agents", f"Not agents of tenant '{tenant}': {', '.join(foreign)}.")
        return data


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    form = ApiKeyForm
    list_display = (
        "prefix",
        "name",
        "tenant",
        "mode",
        "created",
        "last_used_at",
        "webhook_url",
        "_has_expired",
        "revoked",
    )
    list_filter = ("tenant", "mode", "revoked", "created")
    list_select_related = ("tenant",)
    filter_horizontal = ("agents",)
    readonly_fields = ("prefix", "last_used_at")
    actions = ["rotate_webhook_secret"]

    def get_readonly_fields(self, request, obj=None):
        fields = ("prefix", "last_used_at")
        if obj is not None and obj.revoked:  # a revoked key stays revoked
            fields += ("name", "revoked", "expiry_date", "tenant", "mode")
        return fields

    def save_model(self, request, obj, form, change):
        was_revoked = change and ApiKey.objects.filter(pk=obj.pk, revoked=True).exists()
        super().save_model(request, obj, form, change)
        actor = f"admin:{request.user.get_username()}"
        if "webhook_url" in form.changed_data and not obj.revoked:
            # The URL is saved; this makes the signing secret a first URL needs (shown once).
            self._show_secret(request, obj, set_webhook(obj, obj.webhook_url, actor=actor))
        if not change:
            record_audit(actor, "consumer_api.create_key", obj, mode=obj.mode)
        elif obj.revoked and not was_revoked:
            record_audit(actor, "consumer_api.revoke_key", obj)

    def _show_secret(self, request, obj: ApiKey, secret: str | None) -> None:
        if secret:
            messages.warning(
                request,
                f"The webhook signing secret of {obj.prefix} is: {secret} . Store it now: "
                "it is not shown again.",
            )

    def has_rotate_webhook_secret_permission(self, request) -> bool:
        return request.user.has_perm("consumer_api.change_apikey")

    @admin.action(
        description="New webhook signing secret for the selected keys (shown once)",
        permissions=["rotate_webhook_secret"],
    )
    def rotate_webhook_secret(self, request, queryset):
        page = confirmation_page(
            self,
            request,
            queryset,
            action="rotate_webhook_secret",
            title="Give these keys a new webhook signing secret?",
            note="Events are signed with the new secret at once: the host app must switch to "
            "it, or it will refuse every event until it does.",
        )
        if page is not None:
            return page
        actor = f"admin:{request.user.get_username()}"
        skipped = 0
        for obj in queryset.order_by("pk"):
            if obj.revoked or not obj.webhook_url:
                skipped += 1
                continue
            self._show_secret(
                request, obj, set_webhook(obj, obj.webhook_url, actor=actor, rotate_secret=True)
            )
        if skipped:
            messages.info(request, f"{skipped} key(s) skipped: revoked or without a webhook URL.")


@admin.register(Tenant)
class TenantAdmin(AuditedModelAdmin):
    list_display = ("slug", "name", "created_at")
    search_fields = ("slug", "name")


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The kept first answers of idempotent writes (24 h), for support questions."""

    list_display = ("api_key", "key", "status_code", "created_at")
    list_select_related = ("api_key",)


from agents.consumer_api import admin_events  # noqa: E402,F401 (registers the event list)
