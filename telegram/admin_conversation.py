"""The conversation page's admin doors (telegram.conversation): the page, and "send as the
agent" (a form, then a confirmation page, both POST with CSRF).

Reading the page needs to view conversations (``agents.view_conversation``, or change);
sending needs ``telegram.send_as_agent``. The doors hang under the bindings' admin."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html

from agents.admin_access import require
from agents.audit import actor_name
from agents.models import Conversation
from telegram import conversation as service

VIEW = ("agents.view_conversation", "agents.change_conversation")
SEND = "telegram.send_as_agent"


def page_url(conversation_id: str) -> str:
    return reverse("admin:telegram_conversation", args=[conversation_id])


def link_html(conversation_id: str | None) -> str:
    """A list column's link to the page (— when there is no conversation)."""
    if not conversation_id:
        return "—"
    try:
        return format_html('<a href="{}">{}</a>', page_url(conversation_id), conversation_id)
    except NoReverseMatch:  # an id no URL can carry (e.g. empty segments): plain text
        return conversation_id


def urls(model_admin) -> list:
    wrap = model_admin.admin_site.admin_view
    return [
        # Distinct prefixes: a conversation id may contain "/".
        path(
            "conversation-send/<path:conversation_id>/",
            wrap(lambda request, conversation_id: send(model_admin, request, conversation_id)),
            name="telegram_conversation_send",
        ),
        path(
            "conversation/<path:conversation_id>/",
            wrap(lambda request, conversation_id: page(model_admin, request, conversation_id)),
            name="telegram_conversation",
        ),
    ]


def _conversation(conversation_id: str) -> Conversation:
    return get_object_or_404(
        Conversation.objects.select_related("agent"), conversation_id=conversation_id
    )


def page(model_admin, request, conversation_id: str):
    allowed = any(request.user.has_perm(p) for p in VIEW)
    require(request, allowed, door="telegram_conversation", permission=VIEW[0])
    conversation = _conversation(conversation_id)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Conversation {conversation.conversation_id}",
        "opts": conversation._meta,
        "conversation": conversation,
        "can_send": request.user.has_perm(SEND),
        "send_url": reverse("admin:telegram_conversation_send", args=[conversation_id]),
        "max_text": service.MAX_TEXT,
        **service.page_data(conversation),
    }
    return TemplateResponse(request, "admin/telegram/conversation.html", context)


def send(model_admin, request, conversation_id: str):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    door = "telegram_conversation_send"
    require(request, request.user.has_perm(SEND), door=door, permission=SEND)
    conversation = _conversation(conversation_id)
    text = request.POST.get("text", "")
    if request.POST.get("confirm") != "yes":
        context = {
            **model_admin.admin_site.each_context(request),
            "title": "Send as the agent?",
            "opts": conversation._meta,
            "conversation": conversation,
            "text": text,
            "chat_id": service.chat_id_for(conversation),
            "page_url": page_url(conversation_id),
        }
        return TemplateResponse(request, "admin/telegram/conversation_send.html", context)
    try:
        service.send_as_agent(conversation, text, actor=actor_name(request.user))
    except service.SendError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            "Queued for the chat in the outbox (its row below shows when Telegram accepts it),"
            " and added to the history.",
        )
    return redirect(page_url(conversation_id))
