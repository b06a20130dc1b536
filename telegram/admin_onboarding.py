"""The onboarding page of an agent's bot in the admin: import token → verify → webhook →
pairing code → readiness, each step behind the permission it exercises (SPEC §16)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.utils.safestring import mark_safe

from agents.admin_access import require
from agents.audit import actor_name
from agents.models import AgentProfile
from agents.secret_store import SecretUnavailable
from telegram import admin_sandbox_chat, bots, pairing, readiness
from telegram.models import Bot
from telegram.qr import qr_svg


class TokenForm(forms.Form):
    token = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        strip=True,
        help_text="From BotFather. Verified with getMe; never shown again.",
    )
    replace_bot = forms.BooleanField(
        required=False, help_text="Switch to a different bot (revokes bindings)."
    )


class PairingForm(forms.Form):
    consumer_user_id = forms.CharField(max_length=255)
    ttl_minutes = forms.IntegerField(min_value=1, max_value=24 * 60, initial=15)


# The permission each onboarding step exercises (SPEC §16): everything that touches the bot,
# its token or its webhook is a change of the bot; a pairing code is a new PairingCode row
# (and lets whoever redeems it into that consumer user's conversation).
STEP_PERMISSIONS = {
    "import_token": "telegram.change_bot",
    "configure_webhook": "telegram.change_bot",
    "reconcile_identity": "telegram.change_bot",
    "rotate_secret": "telegram.change_bot",
    "create_pairing": "telegram.add_pairingcode",
}
# Opening the page (bot, readiness) needs to view bots or to be allowed one of the steps.
ONBOARDING_PAGE_PERMISSIONS = {"telegram.view_bot", *STEP_PERMISSIONS.values()}


def onboarding_view(model_admin, request, agent_id: int):
    user = request.user
    allowed = any(user.has_perm(perm) for perm in ONBOARDING_PAGE_PERMISSIONS)
    require(request, allowed, door="telegram_onboarding", permission="telegram.view_bot")
    agent = get_object_or_404(AgentProfile, pk=agent_id)
    actor = actor_name(user)
    token_form, pairing_form, code = TokenForm(), PairingForm(), None
    if request.method == "POST":
        step = request.POST.get("step")
        if step not in STEP_PERMISSIONS:
            return HttpResponseBadRequest("Unknown onboarding step.")
        needed = STEP_PERMISSIONS[step]
        require(
            request, user.has_perm(needed), door=f"telegram_onboarding.{step}", permission=needed
        )
        try:
            if step == "import_token":
                token_form = TokenForm(request.POST)
                if token_form.is_valid():
                    result = bots.import_telegram_token(
                        agent.agent_key,
                        token_form.cleaned_data["token"],
                        actor=actor,
                        replace_bot=token_form.cleaned_data["replace_bot"],
                    )
                    messages.success(
                        request,
                        f"Token verified: @{result.bot.username}"
                        + (" (same bot: token rotated)." if result.rotated else "."),
                    )
                    if result.replaced_bot:
                        messages.warning(
                            request,
                            f"Replaced bot {result.replaced_bot}: {result.revoked_bindings} "
                            f"binding(s) revoked, {result.expired_pairings} code(s) expired.",
                        )
                    if result.old_webhook_error:
                        messages.warning(request, bots.old_webhook_warning(result))
                    if result.webhook_error:
                        messages.error(
                            request, f"Token stored, but the webhook: {result.webhook_error}"
                        )
                    return redirect(request.path)
            elif step == "configure_webhook":
                result = bots.configure_webhook(agent.agent_key, actor=actor)
                for warning in result["warnings"]:
                    messages.warning(request, warning)
                messages.success(request, f"Webhook set to {result['webhook_url']}.")
                return redirect(request.path)
            elif step == "reconcile_identity":
                result = bots.reconcile_bot_identity(agent.agent_key, actor=actor)
                messages.success(request, "Bot identity refreshed from getMe.")
                for warning in result["warnings"]:
                    messages.warning(request, warning)
                return redirect(request.path)
            elif step == "rotate_secret":
                bots.rotate_webhook_secret(agent.agent_key, actor=actor)
                messages.success(request, "Webhook secret rotated (old one valid 10 more minutes).")
                return redirect(request.path)
            elif step == "create_pairing":
                pairing_form = PairingForm(request.POST)
                if pairing_form.is_valid():
                    code = pairing.create_pairing_code(
                        pairing_form.cleaned_data["consumer_user_id"],
                        agent.agent_key,
                        actor=actor,
                        ttl_minutes=pairing_form.cleaned_data["ttl_minutes"],
                    )
        except (bots.TelegramSetupError, pairing.PairingError, SecretUnavailable) as exc:
            messages.error(request, str(exc))
    bot = Bot.objects.filter(agent=agent).first()
    link = pairing.deep_link(bot.username, code.code) if code and bot else None
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Onboard Telegram for {agent.agent_key}",
        "agent": agent,
        "bot": bot,
        "token_form": token_form,
        "pairing_form": pairing_form,
        "pairing": code,
        "deep_link": link,
        "sandbox_chat_url": admin_sandbox_chat.pairing_link(code, bot),
        "qr": mark_safe(qr_svg(link)) if link else None,  # noqa: S308 (our own SVG)
        "readiness": readiness.readiness(agent.agent_key),
        "can_change_bot": user.has_perm("telegram.change_bot"),
        "can_add_pairing": user.has_perm("telegram.add_pairingcode"),
        "opts": AgentProfile._meta,
    }
    return TemplateResponse(request, "admin/telegram/onboarding.html", context)
