"""Telegram in the admin: bots, pairing codes, bindings, ingress issues and the sandbox; the
onboarding page per agent lives in ``admin_onboarding``, reached from the bot list."""

from __future__ import annotations

from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from agents.admin_access import ReadOnlyAdminMixin, confirmation_page
from agents.audit import actor_name
from agents.secret_store import SecretUnavailable
from telegram import (  # noqa: F401 (admin_outbox registers the outbox list)
    admin_conversation,
    admin_outbox,
    admin_sandbox_chat,
    bots,
    pairing,
    readiness,
)
from telegram.admin_onboarding import onboarding_view
from telegram.models import (
    Bot,
    IdentityBinding,
    IngressIssue,
    PairingCode,
    SandboxMessage,
    TelegramUpdate,
)


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):
    list_display = [
        "username",
        "bot_identity",
        "agent",
        "webhook_verified",
        "webhook_info_at",
        "onboarding_link",
    ]
    list_filter = ["webhook_verified", "agent"]
    search_fields = ["username", "bot_identity", "agent__agent_key"]
    list_select_related = ["agent"]
    readonly_fields = [
        "agent",
        "bot_identity",
        "username",
        "webhook_url",
        "webhook_configured_at",
        "webhook_info",
        "webhook_info_at",
        "webhook_verified",
        "last_error_message",
        "last_error_at",
        "previous_secret_valid_until",
        "created_at",
    ]
    actions = ["reconcile_identity", "rotate_secret"]

    def has_add_permission(self, request):
        return False  # bots are added by importing a token (onboarding page)

    @admin.display(description="Onboarding")
    def onboarding_link(self, obj):
        url = reverse("admin:telegram_onboarding", args=[obj.agent_id])
        return format_html('<a href="{}">open</a>', url)

    def get_urls(self):
        return [
            path(
                "onboarding/<int:agent_id>/",
                self.admin_site.admin_view(
                    lambda request, agent_id: onboarding_view(self, request, agent_id)
                ),
                name="telegram_onboarding",
            ),
        ] + super().get_urls()

    def _each_agent(self, request, queryset, step):
        """Run ``step`` for each selected bot's agent; yields (agent_key, result) of those
        that succeeded, after showing each failure with its agent."""
        actor = actor_name(request.user)
        for bot in queryset.select_related("agent"):
            key = bot.agent.agent_key
            try:
                result = step(key, actor=actor)
            except (bots.TelegramSetupError, SecretUnavailable) as exc:
                self.message_user(request, f"{key}: {exc}", messages.ERROR)
                continue
            yield key, result

    @admin.action(description="Reconcile bot identity (getMe)", permissions=["change"])
    def reconcile_identity(self, request, queryset):
        done = 0
        for key, result in self._each_agent(request, queryset, bots.reconcile_bot_identity):
            done += 1
            for warning in result["warnings"]:
                self.message_user(request, f"{key}: {warning}", messages.WARNING)
        self.message_user(request, f"{done} bot(s) reconciled.")

    @admin.action(description="Rotate webhook secret", permissions=["change"])
    def rotate_secret(self, request, queryset):
        page = confirmation_page(
            self,
            request,
            queryset,
            action="rotate_secret",
            title="Rotate these bots' webhook secrets?",
            note="Each bot gets a new webhook secret. The previous one stays accepted for 10 "
            "minutes; anything still sending it after that is refused.",
        )
        if page is not None:
            return page
        done = sum(1 for _ in self._each_agent(request, queryset, bots.rotate_webhook_secret))
        self.message_user(
            request, f"{done} webhook secret(s) rotated; the old ones stay valid 10 minutes."
        )


class SoftResetActionMixin:
    """The soft reset, offered from both the pairing codes and the bindings list. It revokes
    bindings and expires codes, so it needs the change permission of both models."""

    def has_soft_reset_permission(self, request):
        return request.user.has_perms(
            ["telegram.change_identitybinding", "telegram.change_pairingcode"]
        )

    @admin.action(
        description="Soft-reset legacy bindings and codes (preview first)",
        permissions=["soft_reset"],
    )
    def soft_reset(self, request, queryset):
        return soft_reset_action(self, request, queryset)


def soft_reset_action(model_admin, request, queryset):
    """Global, whatever rows were ticked: the legacy rows are found by the rule, not picked."""
    actor = actor_name(request.user)
    if request.POST.get("confirm") == "yes":
        report = pairing.soft_reset_legacy(
            apply=True,
            revoke_bindings="revoke_bindings" in request.POST,
            expire_pairings="expire_pairings" in request.POST,
            actor=actor,
        )
        model_admin.message_user(request, f"Soft reset applied: {report}")
        return None
    # The preview shows what the form's defaults (both boxes ticked) would change.
    preview = pairing.soft_reset_legacy(
        apply=False, revoke_bindings=True, expire_pairings=True, actor=actor
    )
    return TemplateResponse(
        request,
        "admin/telegram/soft_reset.html",
        {
            **model_admin.admin_site.each_context(request),
            "title": "Soft-reset legacy Telegram bindings",
            "preview": preview,
            "objects": queryset,
            "opts": model_admin.model._meta,
        },
    )


@admin.register(PairingCode)
class PairingCodeAdmin(SoftResetActionMixin, admin.ModelAdmin):
    list_display = [
        "code",
        "consumer_user_id",
        "agent",
        "status",
        "created_at",
        "expires_at",
        "used_at",
        "sandbox_chat",
    ]
    list_filter = ["status", "agent"]
    search_fields = ["code", "consumer_user_id", "telegram_user_id"]
    list_select_related = ["agent"]
    readonly_fields = [f.name for f in PairingCode._meta.fields] + ["sandbox_chat"]
    actions = ["soft_reset"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="Sandbox")
    def sandbox_chat(self, obj):
        return admin_sandbox_chat.pairing_link_html(obj)


class LegacyBindingFilter(admin.SimpleListFilter):
    """Rows from before bot identities: the ones the soft reset is about."""

    title = "bot identity"
    parameter_name = "has_bot"

    def lookups(self, request, model_admin):
        return [("yes", "known"), ("no", "missing (legacy)")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(pairing.MISSING_BOT_IDENTITY)
        if self.value() == "yes":
            return queryset.exclude(pairing.MISSING_BOT_IDENTITY)
        return queryset


@admin.register(IdentityBinding)
class IdentityBindingAdmin(SoftResetActionMixin, admin.ModelAdmin):
    list_display = [
        "consumer_user_id",
        "agent",
        "bot_identity",
        "telegram_user_id",
        "status",
        "source",
        "bound_at",
        "revoked_at",
        "conversation_link",
    ]
    list_filter = ["status", "source", LegacyBindingFilter, "agent"]
    search_fields = ["consumer_user_id", "telegram_user_id", "telegram_chat_id", "bot_identity"]
    list_select_related = ["agent"]
    readonly_fields = [f.name for f in IdentityBinding._meta.fields]
    actions = ["revoke", "soft_reset"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="Conversation")
    def conversation_link(self, obj):
        return admin_conversation.link_html(obj.conversation_id)

    def get_urls(self):
        return admin_conversation.urls(self) + super().get_urls()

    @admin.action(description="Revoke selected bindings", permissions=["change"])
    def revoke(self, request, queryset):
        if request.POST.get("confirm") != "yes":
            return TemplateResponse(
                request,
                "admin/telegram/confirm.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Revoke bindings?",
                    "action": "revoke",
                    "objects": queryset,
                    "opts": self.model._meta,
                },
            )
        revoked = sum(pairing.revoke_binding(b, actor=actor_name(request.user)) for b in queryset)
        self.message_user(request, f"{revoked} binding(s) revoked.")
        return None


@admin.register(TelegramUpdate)
class TelegramUpdateAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["received_at", "bot_identity", "update_id", "outcome", "detail", "message_id"]
    list_filter = ["outcome", "bot_identity"]
    search_fields = ["bot_identity", "update_id", "detail"]
    date_hierarchy = "received_at"


@admin.register(IngressIssue)
class IngressIssueAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "kind", "bot_identity", "telegram_user_id", "notified", "detail"]
    list_filter = ["kind", "notified", "bot_identity"]
    search_fields = ["bot_identity", "telegram_user_id", "detail"]


@admin.register(SandboxMessage)
class SandboxMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "bot_id", "chat_id", "sender", "text"]
    search_fields = ["chat_id", "text"]
    list_filter = ["bot_id", "sender"]

    def get_urls(self):
        return admin_sandbox_chat.urls(self) + super().get_urls()
