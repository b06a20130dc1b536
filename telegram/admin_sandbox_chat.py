"""The sandbox chat's admin doors: the page, its poll and its send (telegram.sandbox_chat).

Opening the page and reading transcripts needs ``telegram.view_sandboxmessage``; sending —
which pairs Telegram users and queues work as them — ``telegram.use_sandbox_chat``. With the
sandbox switched off every door is a 404."""

from __future__ import annotations

import json

from django.conf import settings
from django.http import Http404, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from agents.admin_access import require
from telegram import sandbox_chat
from telegram.models import Bot, PairingCode, SandboxMessage

VIEW = "telegram.view_sandboxmessage"
SEND = "telegram.use_sandbox_chat"


def chat_url(bot_identity: str, *, start_code: str = "", user: int | None = None) -> str:
    """The page for one bot; with ``start_code`` the composer holds ``/start <code>`` (what a
    pairing deep link does in Telegram)."""
    query = {"bot": bot_identity}
    if user is not None:
        query["user"] = user
    if start_code:
        query["start"] = start_code
    return f"{reverse('admin:telegram_sandbox_chat')}?{urlencode(query)}"


def pairing_link(pairing, bot) -> str | None:
    """Where a pending code's deep link leads in the sandbox: this chat with ``/start <code>``
    ready to send (t.me is of no use for a sandbox bot)."""
    if not (settings.AGENT_FACTORY_TELEGRAM_SANDBOX and pairing and bot):
        return None
    if pairing.status != PairingCode.PENDING:
        return None
    return chat_url(bot.bot_identity, start_code=pairing.code)


def pairing_link_html(pairing) -> str:
    """The pairing code list's column (legacy codes name no bot: no link)."""
    link = (
        pairing_link(pairing, Bot(bot_identity=pairing.bot_identity))
        if pairing.bot_identity
        else None
    )
    return format_html('<a href="{}">open in sandbox chat</a>', link) if link else "—"


def urls(model_admin) -> list:
    """The doors, hung under the sandbox messages' admin (``SandboxMessageAdmin.get_urls``)."""
    wrap = model_admin.admin_site.admin_view
    return [
        path(
            "chat/",
            wrap(lambda request: chat_page(model_admin, request)),
            name="telegram_sandbox_chat",
        ),
        path("chat/messages/", wrap(chat_messages), name="telegram_sandbox_chat_messages"),
        path("chat/send/", wrap(chat_send), name="telegram_sandbox_chat_send"),
    ]


def _sandbox_door(request, door: str, permission: str) -> None:
    """Every sandbox chat door: 404 while the sandbox is off, then the permission check."""
    if not settings.AGENT_FACTORY_TELEGRAM_SANDBOX:
        raise Http404("The Telegram sandbox is switched off.")
    require(request, request.user.has_perm(permission), door=door, permission=permission)


def _error(exc: sandbox_chat.SandboxChatError) -> JsonResponse:
    body = {"error": exc.code, "detail": exc.detail}
    if exc.field:
        body["fields"] = {exc.field: [exc.detail]}
    return JsonResponse(body, status=400)


def chat_page(model_admin, request):
    _sandbox_door(request, "telegram_sandbox_chat", VIEW)
    bots = sandbox_chat.chat_bots()
    wanted = request.GET.get("bot", "")
    selected = next((b for b in bots if b.bot.bot_identity == wanted), None)
    if selected is None:
        selected = next((b for b in bots if b.webhook_url), bots[0] if bots else None)
    try:
        user = sandbox_chat.parse_telegram_user(
            request.GET.get("user") or sandbox_chat.DEFAULT_TELEGRAM_USER
        )
    except sandbox_chat.SandboxChatError:
        user = sandbox_chat.DEFAULT_TELEGRAM_USER
    start = request.GET.get("start", "").strip()[:32]
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Sandbox chat",
        "opts": SandboxMessage._meta,
        "bots": bots,
        "selected": selected,
        "telegram_user": user,
        "prefill": f"/start {start}" if start else "",
        "can_send": request.user.has_perm(SEND),
        "messages_url": reverse("admin:telegram_sandbox_chat_messages"),
        "send_url": reverse("admin:telegram_sandbox_chat_send"),
        "max_text": sandbox_chat.MAX_TEXT,
    }
    return TemplateResponse(request, "admin/telegram/sandbox_chat.html", context)


@require_GET
def chat_messages(request):
    _sandbox_door(request, "telegram_sandbox_chat_messages", VIEW)
    try:
        user = sandbox_chat.parse_telegram_user(request.GET.get("user"))
        after = int(request.GET.get("after") or 0)
    except ValueError:
        return JsonResponse({"error": "invalid", "detail": "after must be a number."}, status=400)
    except sandbox_chat.SandboxChatError as exc:
        return _error(exc)
    bot = request.GET.get("bot", "")
    return JsonResponse({"messages": sandbox_chat.transcript(bot, user, after)})


@require_POST
def chat_send(request):
    _sandbox_door(request, "telegram_sandbox_chat_send", SEND)
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return JsonResponse({"error": "invalid", "detail": "Send a JSON object."}, status=400)
    try:
        result = sandbox_chat.send_as_user(data.get("bot"), data.get("user"), data.get("text"))
    except sandbox_chat.SandboxChatError as exc:
        return _error(exc)
    return JsonResponse(result)
