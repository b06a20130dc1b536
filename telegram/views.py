"""Webhook ingress: ``POST /telegram/webhook/<bot_identity>/`` (SPEC §5.3).

The view never calls Telegram: replies to the user go through django-q2 after commit.
Everything after authentication answers 200 unless the body is malformed (400) or the
database is unavailable (503), because Telegram redelivers anything else for a day.
"""

from __future__ import annotations

import json
import logging

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from agents.secret_store import SecretUnavailable
from telegram import ingress
from telegram.models import TelegramUpdate
from telegram.webhook_auth import load_bot, webhook_secret_matches

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024


def _answer(status: str, http_status: int = 200, **extra) -> JsonResponse:
    return JsonResponse({"ok": True, "status": status, **extra}, status=http_status)


def _error(code: str, http_status: int) -> JsonResponse:
    return JsonResponse({"error": code}, status=http_status)


@csrf_exempt
def webhook(request, bot_identity: str):
    if request.method != "POST":
        response = _error("method_not_allowed", 405)
        response["Allow"] = "POST"
        return response
    try:
        return _handle(request, bot_identity)
    except DatabaseError:
        logger.exception("Database unavailable while handling a Telegram update.")
        return _error("unavailable", 503)
    except SecretUnavailable as exc:
        # A key left the key ring: Telegram retries, nothing is lost, the operator is told
        # why in one line (never a traceback, never a value).
        logger.error("Telegram update for bot %s refused with 503: %s", bot_identity, exc)
        return _error("unavailable", 503)


def _handle(request, bot_identity: str):
    now = timezone.now()
    given = request.headers.get("X-Telegram-Bot-Api-Secret-Token")
    # The body is parsed before the secret is checked only so that the bot's row and the
    # dedupe lookup share one round trip (a redelivery then costs nothing else); the answers
    # keep SPEC §5.3's order — a wrong secret is 403 whatever the body, and a body is
    # capped (MAX_BODY_BYTES) before it is parsed.
    update = _parse(request)
    update_id = update["update_id"] if update is not None else None
    # Read fresh for every update, never cached (SPEC §5.3, last paragraph).
    loaded = load_bot(bot_identity, update_id)
    if loaded is None or not webhook_secret_matches(loaded, given, now):
        return _error("invalid_secret_token", 403)
    bot = loaded.bot
    if update is None:
        return _error("invalid_update", 400)
    # A cheap early answer for the common redelivery. The guarantee is not this check but
    # the unique (bot, update_id) row written in the same transaction as the queue row.
    if loaded.update_seen:
        return _answer("duplicate")

    incoming = ingress.extract(update)
    try:
        if incoming is None:
            _record(bot_identity, update_id, "ignored")
            return _answer("ignored")
        result = ingress.route(bot, update, incoming)
    except IntegrityError:
        # Everything of this update was rolled back. Usually the same update arrived twice
        # at once and the other request recorded it; if not, some other race lost it, and a
        # 503 makes Telegram deliver it again rather than drop it.
        if already_seen(bot_identity, update_id):
            return _answer("duplicate")
        logger.warning(
            "Update %s of bot %s hit a conflict; asking for redelivery.", update_id, bot_identity
        )
        return _error("unavailable", 503)
    return _answer(result.status, **result.extra)


# Every update asks this, half of a redelivery storm asks nothing else: written as SQL
# because the ORM spends longer compiling this lookup than the database spends answering it
# (bench/webhook_ingest.py). It reads the (bot_identity, update_id) unique index.
_SEEN_SQL = (
    f"SELECT 1 FROM {TelegramUpdate._meta.db_table} "  # noqa: S608 (names, not input)
    "WHERE bot_identity = %s AND update_id = %s LIMIT 1"
)


def already_seen(bot_identity: str, update_id: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(_SEEN_SQL, [bot_identity, update_id])
        return cursor.fetchone() is not None


def _parse(request) -> dict | None:
    try:
        body = request.body
    except RequestDataTooBig:  # past DATA_UPLOAD_MAX_MEMORY_SIZE: not read at all
        return None
    if len(body) > MAX_BODY_BYTES:
        return None
    try:
        update = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(update, dict):
        return None
    if b"\\u0000" in body:  # JSON can carry NUL only as this escape
        update = _without_nul(update)
    update_id = update.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        return None
    if not -(2**63) <= update_id < 2**63:
        return None
    return update


def _without_nul(update: dict) -> dict:
    """The update with every NUL character replaced by U+FFFD.

    PostgreSQL's text and jsonb cannot hold NUL, so such an update would fail to be stored
    and be redelivered for a day; Telegram itself never sends one. Iterative, because a
    body may nest as deep as the JSON parser allows.
    """

    def clean(value):
        return value.replace("\x00", "\ufffd") if isinstance(value, str) else value

    root = {"": update}
    stack = [root]
    while stack:
        node = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if isinstance(node, dict):
            node.clear()
        for key, value in items:
            value = clean(value)
            if isinstance(value, dict | list):
                stack.append(value)
            node[clean(key)] = value
    return root[""]


def _record(bot_identity: str, update_id: int, outcome: str, detail: str = "") -> None:
    with transaction.atomic():
        TelegramUpdate.objects.create(
            bot_identity=bot_identity, update_id=update_id, outcome=outcome, detail=detail[:300]
        )
