"""Which Bot API errors the server records for admins (agents.external_errors), handed to
every client ``telegram.bots`` builds as its ``on_error``.

Recorded: what says Telegram or our credentials are failing — network errors, 5xx, 429
(the bot is being throttled), 401/404 (a revoked or wrong token), 409 (a webhook conflict).
Not recorded: 400 and 403, Telegram's answer about one request's content or recipient (a
user who blocked the bot, a chat that is gone, entities it cannot parse): the outbox marks
that row failed with the reason, and the admin page that made the call shows it."""

from __future__ import annotations

from agents.external_errors import ExternalApiError, record_api_error
from telegram.bot_api import TelegramApiError, TelegramError

PER_REQUEST = (400, 403)


def recorder(subject: str):
    """The ``on_error`` callback of a client for ``subject`` (an agent key or bot id)."""

    def record(exc: TelegramError) -> None:
        code = exc.error_code if isinstance(exc, TelegramApiError) else None
        if code in PER_REQUEST:
            return
        record_api_error(
            ExternalApiError.TELEGRAM,
            getattr(exc, "method", "") or "call",
            str(exc),
            subject=subject,
            status_code=code,
        )

    return record
