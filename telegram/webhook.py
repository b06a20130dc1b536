"""The webhook door: ``POST /telegram/webhook/<bot_identity>/`` as a DRF view (SPEC §5.3).

Authentication is the ``X-Telegram-Bot-Api-Secret-Token`` header (step 1, 403), then the
body (step 2, 400), the dedupe shortcut (step 3) and ``telegram.ingress`` for the rest.
Errors keep SPEC §5.3's bodies, ``{"error": "<code>"}``, through DRF's exception handling;
the database being unavailable or a secret that cannot be decrypted answer 503 (Telegram
retries, nothing is lost). Everything else answers 200, because Telegram redelivers any
other answer for a day. The view never calls Telegram: replies go through django-q2 after
commit.

The bot, its agent and its secrets are read from the database on every update, never
cached: a bot replaced, a secret rotated or an agent disabled in another process applies
from the very next update (SPEC §5.3, last paragraph). The only thing kept in memory is
the plaintext of one encryption of a secret row, keyed by its row id and random nonce: an
import writes a new row and a re-encryption a new nonce, so the cache saves decryptions but
never decides which secret is accepted.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
from dataclasses import dataclass

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, IntegrityError
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Secret
from agents.secret_store import SecretUnavailable, decrypt_secret
from telegram import ingress, sql, updates
from telegram.models import Bot

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"

_PLAINTEXT_BY_ROW: dict[tuple[int, bytes], str] = {}
_PLAINTEXT_ROWS_MAX = 1000


class InvalidSecretToken(exceptions.AuthenticationFailed):
    # DRF answers 403 (not 401) because the authentication class sends no challenge header.
    default_code = "invalid_secret_token"


class InvalidUpdate(exceptions.ParseError):
    default_code = "invalid_update"


# Loading the bot ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IngressBot:
    bot: Bot
    # (id, active, nonce) of the webhook secret's two newest versions, newest first.
    secret_rows: list[tuple[int, bool, bytes]]
    # Whether (this bot, the update id asked about) is already recorded.
    update_seen: bool = False
    # The active binding of (this bot, ``sender``), read in the same round trip; only an
    # answer about ``sender`` (None: nobody was asked about).
    sender: str | None = None
    binding_pk: int | None = None


def load_bot(
    bot_identity: str, update_id: int | None = None, sender: str | None = None
) -> IngressBot | None:
    """The bot with its agent and webhook secret rows, as the database has them now,
    whether ``update_id`` (if given) was already recorded for it and the active binding of
    ``sender`` (if given) on it: one round trip."""
    row = sql.bot_with_secrets(bot_identity, update_id, sender)
    if row is None:
        return None
    bot, secret_rows, seen, binding_pk = row
    return IngressBot(bot, secret_rows, seen, sender, binding_pk)


def webhook_secret_matches(loaded: IngressBot, given: str | None, now: dt.datetime) -> bool:
    """Constant-time check of the header against the bot's currently accepted secrets.

    Raises ``SecretUnavailable`` when an accepted secret cannot be decrypted.
    """
    if not given:
        return False
    until = loaded.bot.previous_secret_valid_until
    accepted = [
        _plaintext(pk, nonce)
        for pk, active, nonce in loaded.secret_rows
        if active or (until is not None and until > now)
    ]
    return secret_matches(given, accepted)


def _plaintext(pk: int, nonce: bytes) -> str:
    value = _PLAINTEXT_BY_ROW.get((pk, nonce))
    if value is None:
        value = decrypt_secret(Secret.objects.get(pk=pk))
        if len(_PLAINTEXT_BY_ROW) >= _PLAINTEXT_ROWS_MAX:
            _PLAINTEXT_BY_ROW.clear()
        _PLAINTEXT_BY_ROW[(pk, nonce)] = value
    return value


def secret_matches(given: str | None, accepted: list[str]) -> bool:
    if not given:
        return False
    matched = False
    for candidate in accepted:  # compare with every candidate: timing reveals nothing
        matched |= hmac.compare_digest(given.encode(), candidate.encode())
    return matched


# Authentication -----------------------------------------------------------------------------


class BotPrincipal:
    """DRF wants a user; the bot an update is for stands in for one (never a Django user)."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, bot: Bot):
        self.bot = bot


@dataclass(frozen=True)
class Delivery:
    """What authentication learnt about the request: its update (None when the body is
    not one), whether that update is already recorded, the parts of it we handle (None
    when it is of a kind we ignore) and its sender's binding on the bot."""

    update: dict | None
    seen: bool
    incoming: updates.Incoming | None = None
    binding: ingress.SenderBinding | None = None


class WebhookSecretAuthentication(BaseAuthentication):
    """The secret header, checked against the bot named in the URL (SPEC §5.3 step 1).

    The body is parsed first only so that the bot's row, the dedupe flag and the sender's
    binding share one round trip (a redelivery then costs nothing else); the answers keep
    SPEC §5.3's order — a wrong secret is 403 whatever the body, and a body is capped
    before it is parsed.
    """

    def authenticate(self, request):
        bot_identity = request.parser_context["kwargs"]["bot_identity"]
        update = parse_update(request._request)
        incoming = updates.extract(update) if update is not None else None
        sender = incoming.user_id if incoming is not None else None
        loaded = load_bot(bot_identity, update["update_id"] if update is not None else None, sender)
        given = request._request.headers.get(SECRET_HEADER)
        if loaded is None or not webhook_secret_matches(loaded, given, timezone.now()):
            raise InvalidSecretToken()
        binding = (
            ingress.SenderBinding(loaded.sender, loaded.binding_pk)
            if loaded.sender is not None
            else None
        )
        return BotPrincipal(loaded.bot), Delivery(update, loaded.update_seen, incoming, binding)


def parse_update(request) -> dict | None:
    """The body as an update (an object with an integer ``update_id``), or None."""
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


# The view -----------------------------------------------------------------------------------


class JSONOnly(BaseContentNegotiation):
    """Telegram sends JSON and reads JSON: no Accept header parsing on the hot path."""

    def select_parser(self, request, parsers):
        return None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def _answer(status: str, **extra) -> Response:
    return Response({"ok": True, "status": status, **extra})


def _error(code: str, http_status: int) -> Response:
    return Response({"error": code}, status=http_status)


def webhook_exception_handler(exc, context):
    """SPEC §5.3's error bodies: ``{"error": "<code>"}`` and nothing else."""
    if isinstance(exc, exceptions.APIException):
        return _error(exc.default_code, exc.status_code)
    bot_identity = context["kwargs"].get("bot_identity")
    if isinstance(exc, DatabaseError):
        logger.exception("Database unavailable while handling a Telegram update.")
        return _error("unavailable", 503)
    if isinstance(exc, SecretUnavailable):
        # A key left the key ring: Telegram retries, nothing is lost, the operator is told
        # why in one line (never a traceback, never a value).
        logger.error("Telegram update for bot %s refused with 503: %s", bot_identity, exc)
        return _error("unavailable", 503)
    return None


class TelegramWebhookView(APIView):
    # Everything DRF would otherwise take from the defaults is named here, so a change of
    # REST_FRAMEWORK settings never adds work (or a CSRF check) to Telegram's door.
    http_method_names = ["post"]
    authentication_classes = [WebhookSecretAuthentication]
    permission_classes: list = []
    throttle_classes: list = []  # the quotas at the door are per sender (telegram.quotas)
    parser_classes: list = []  # the authentication class parses the body itself
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONOnly
    versioning_class = None
    schema = None

    def get_exception_handler(self):
        return webhook_exception_handler

    def initial(self, request, *args, **kwargs):
        # DRF authenticates before it looks at the method; a GET is 405 whoever sends it.
        if request.method.lower() not in self.http_method_names:
            raise exceptions.MethodNotAllowed(request.method)
        super().initial(request, *args, **kwargs)

    def post(self, request, bot_identity: str):
        bot, delivery = request.user.bot, request.auth
        if delivery.update is None:
            raise InvalidUpdate()
        # A cheap early answer for the common redelivery. The guarantee is not this check
        # but the unique (bot, update_id) row written in the same transaction as the queue row.
        if delivery.seen:
            return _answer("duplicate")
        update_id = delivery.update["update_id"]
        try:
            result = ingress.handle(
                bot, delivery.update, incoming=delivery.incoming, binding=delivery.binding
            )
        except IntegrityError:
            # Everything of this update was rolled back. Usually the same update arrived
            # twice at once and the other request recorded it; if not, some other race lost
            # it, and a 503 makes Telegram deliver it again rather than drop it.
            if sql.update_seen(bot_identity, update_id):
                return _answer("duplicate")
            logger.warning(
                "Update %s of bot %s hit a conflict; asking for redelivery.",
                update_id,
                bot_identity,
            )
            return _error("unavailable", 503)
        return _answer(result.status, **result.extra)


webhook = TelegramWebhookView.as_view()
