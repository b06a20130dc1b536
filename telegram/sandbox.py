"""A built-in fake of the Telegram Bot API, served by the app itself (DEBUG sandbox).

Enough of the API for the whole flow to run offline: getMe, setWebhook, getWebhookInfo,
deleteWebhook, sendMessage, sendPhoto/sendDocument/sendAudio/sendVoice/sendVideo (multipart),
getFile and file downloads. Any token of the form
``<digits>:<anything>`` is a sandbox bot whose id is the digits. Sent messages are stored as
``SandboxMessage`` rows, visible in the admin. Mounted only when
``AGENT_FACTORY_TELEGRAM_SANDBOX`` is on (by default: when DEBUG is).
"""

from __future__ import annotations

import json
import re

from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from telegram.models import SandboxMessage, SandboxWebhook

MEDIA_METHODS = {
    "sendPhoto": "photo",
    "sendDocument": "document",
    "sendAudio": "audio",
    "sendVoice": "voice",
    "sendVideo": "video",
}
TOKEN_PATTERN = re.compile(r"^(\d{1,20}):[A-Za-z0-9_\-]{1,100}$")


def _ok(result) -> JsonResponse:
    return JsonResponse({"ok": True, "result": result})


def _fail(code: int, description: str) -> JsonResponse:
    return JsonResponse({"ok": False, "error_code": code, "description": description}, status=code)


def _params(request) -> dict:
    if request.content_type == "application/json" and request.body:
        try:
            data = json.loads(request.body)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return {**request.GET.dict(), **request.POST.dict()}


@csrf_exempt
def bot_method(request, token: str, method: str):
    match = TOKEN_PATTERN.match(token)
    if not match:
        return _fail(401, "Unauthorized")
    bot_id = match.group(1)
    params = _params(request)
    if method == "getMe":
        return _ok(
            {
                "id": int(bot_id),
                "is_bot": True,
                "first_name": f"Sandbox {bot_id}",
                "username": f"sandbox_{bot_id}_bot",
            }
        )
    if method == "setWebhook":
        url = str(params.get("url") or "")
        SandboxWebhook.objects.update_or_create(
            bot_id=bot_id,
            defaults={"url": url, "allowed_updates": params.get("allowed_updates") or []},
        )
        return _ok(True)
    if method == "deleteWebhook":
        SandboxWebhook.objects.filter(bot_id=bot_id).update(url="")
        return _ok(True)
    if method == "getWebhookInfo":
        hook = SandboxWebhook.objects.filter(bot_id=bot_id).first()
        return _ok(
            {
                "url": hook.url if hook else "",
                "has_custom_certificate": False,
                "pending_update_count": 0,
                "allowed_updates": hook.allowed_updates if hook else [],
            }
        )
    if method == "sendMessage":
        text = params.get("text")
        chat_id = params.get("chat_id")
        if not isinstance(text, str) or not text or chat_id in (None, ""):
            return _fail(400, "Bad Request: chat_id and text are required")
        if len(text) > 4096:
            return _fail(400, "Bad Request: message is too long")
        sent = SandboxMessage.objects.create(bot_id=bot_id, chat_id=str(chat_id), text=text)
        return _ok(
            {
                "message_id": sent.pk,
                "chat": {"id": chat_id},
                "text": text,
                "date": int(sent.created_at.timestamp()),
            }
        )
    if method in MEDIA_METHODS:  # a reply's file (multipart): stored as a line of text
        field = MEDIA_METHODS[method]
        upload = request.FILES.get(field)
        chat_id = params.get("chat_id")
        if upload is None or chat_id in (None, ""):
            return _fail(400, f"Bad Request: chat_id and {field} are required")
        caption = str(params.get("caption") or "")
        if len(caption) > 1024:
            return _fail(400, "Bad Request: message caption is too long")
        text = f"[{field}: {upload.name}, {upload.size} bytes]" + (f" {caption}" if caption else "")
        sent = SandboxMessage.objects.create(bot_id=bot_id, chat_id=str(chat_id), text=text)
        return _ok({"message_id": sent.pk, "chat": {"id": chat_id}, "caption": caption})
    if method == "sendChatAction":  # "typing…": nothing to store
        if params.get("chat_id") in (None, "") or not params.get("action"):
            return _fail(400, "Bad Request: chat_id and action are required")
        return _ok(True)
    if method == "getFile":
        file_id = str(params.get("file_id") or "")
        if not file_id:
            return _fail(400, "Bad Request: file_id is required")
        file_path = f"sandbox/{file_id}.bin"
        return _ok(
            {
                "file_id": file_id,
                "file_unique_id": file_id,
                "file_size": len(_file_content(file_path)),  # what the download serves
                "file_path": file_path,
            }
        )
    return _fail(404, f"Not Found: method {method} is not in the sandbox")


def _file_content(file_path: str) -> bytes:
    return f"sandbox:{file_path}".encode()


def file_download(request, token: str, file_path: str):
    if not TOKEN_PATTERN.match(token):
        return HttpResponse(status=401)
    return HttpResponse(_file_content(file_path), content_type="application/octet-stream")


urlpatterns = [
    path("bot<str:token>/<str:method>", bot_method),
    path("file/bot<str:token>/<path:file_path>", file_download),
]
