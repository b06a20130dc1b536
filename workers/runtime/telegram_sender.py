"""The worker's own Telegram sender: ``sendMessage`` only, for agents whose replies the
worker still delivers itself (SPEC §12, §22 compatibility mode). The server's Bot API client
(``telegram.bot_api``) is a server module; this runtime imports nothing of the server.

Replies are split into ≤ 4096-character messages (line breaks, then spaces preferred); a 429
is honoured with Telegram's ``retry_after``; 5xx answers and network errors are retried with
backoff. The token is part of every URL, so neither a URL nor a ``requests`` exception text
ever reaches an error message or a log line.
"""

from __future__ import annotations

import time

import requests

DEFAULT_API_BASE_URL = "https://api.telegram.org"
MESSAGE_LIMIT = 4096
MAX_ATTEMPTS = 4
MAX_RETRY_AFTER = 60
TIMEOUT = (5, 30)  # connect, read


class TelegramSendError(Exception):
    """Sending failed; the message never contains the bot token."""


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Chunks of at most ``limit`` characters, cut at a line break, else a space, in the
    second half of the window, else hard at ``limit``; line breaks at a cut are dropped."""
    chunks = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = window.rfind("\n")
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut < limit // 2:
            cut = limit
        chunks.append(rest[:cut])
        rest = rest[cut:].lstrip("\n") if rest[cut : cut + 1] == "\n" else rest[cut:]
    if rest or not chunks:
        chunks.append(rest)
    return chunks


def _retry_after(body: dict) -> float:
    parameters = body.get("parameters")
    value = parameters.get("retry_after") if isinstance(parameters, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 1.0
    return min(max(float(value), 0.0), MAX_RETRY_AFTER)


class TelegramSender:
    def __init__(
        self, token: str, *, base_url: str = DEFAULT_API_BASE_URL, session=None, sleep=None
    ):
        if not token or not isinstance(token, str):
            raise TelegramSendError("A bot token is required.")
        self._token = token
        self._base_url = base_url.rstrip("/")
        self._session = session or requests.Session()
        self._sleep = sleep or time.sleep

    def __repr__(self) -> str:  # never show the token
        return f"<TelegramSender base_url={self._base_url!r}>"

    def send_message(self, chat_id: int | str, text: str) -> list[dict]:
        """Send ``text`` split into ≤ 4096-character messages; returns Telegram's results."""
        return [
            self._send({"chat_id": chat_id, "text": chunk}) for chunk in split_message(text or " ")
        ]

    def _send(self, payload: dict):
        url = f"{self._base_url}/bot{self._token}/sendMessage"
        for attempt in range(1, MAX_ATTEMPTS + 1):
            last = attempt == MAX_ATTEMPTS
            try:
                response = self._session.post(url, json=payload, timeout=TIMEOUT)
            except requests.RequestException as exc:
                if last:  # requests' message holds the URL, so only the type name is kept
                    raise TelegramSendError(
                        f"sendMessage failed: network error ({type(exc).__name__})"
                    ) from None
                self._sleep(min(2 ** (attempt - 1), 8))
                continue
            try:
                body = response.json()
            except ValueError:
                body = None
            body = body if isinstance(body, dict) else {}
            if response.status_code == 429 and not last:
                self._sleep(_retry_after(body))
            elif response.status_code >= 500 and not last:
                self._sleep(min(2 ** (attempt - 1), 8))
            elif body.get("ok"):
                return body.get("result")
            else:
                code = body.get("error_code")
                if isinstance(code, bool) or not isinstance(code, int):
                    code = response.status_code
                description = str(body.get("description") or "no description")[:500]
                raise TelegramSendError(f"sendMessage failed ({code}): {description}")
        raise AssertionError("unreachable: the last attempt returns or raises")
