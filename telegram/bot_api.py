"""Telegram Bot API client (SPEC §5.4): plain Python and requests, no Django.

The caller names the API base URL (``telegram.bots.bot_client`` passes the setting), so the
module runs wherever requests does.

Every call goes through ``TelegramClient._call``: explicit timeouts, 429 honoured with the
``retry_after`` Telegram sends, bounded retries with backoff for 5xx and network errors, and
``ok: false`` raised as ``TelegramApiError``. The token is part of every URL, so neither the
URL nor the underlying exception text ever reaches a log line or an error message.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import requests

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
MAX_ATTEMPTS = 4
MAX_RETRY_AFTER = 60
MESSAGE_LIMIT = 4096


class TelegramError(Exception):
    """Base class; messages never contain the bot token."""


class TelegramApiError(TelegramError):
    def __init__(
        self,
        method: str,
        error_code: int | None,
        description: str,
        retry_after: float | None = None,
    ):
        self.method = method
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after  # seconds, on a 429
        super().__init__(f"Telegram {method} failed ({error_code}): {description}")


class TelegramNetworkError(TelegramError):
    def __init__(self, message: str, method: str = ""):
        self.method = method
        super().__init__(message)


@dataclass(frozen=True)
class BotInfo:
    id: int
    username: str
    first_name: str


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters, preferring line breaks,
    then spaces, so words and lines stay whole where possible."""
    if len(text) <= limit:
        return [text]
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
    if rest:
        chunks.append(rest)
    return chunks


def _sleep(seconds: float) -> None:
    # Looked up when a client is built, so tests can replace it for clients made deep
    # inside services and tasks.
    time.sleep(seconds)


def _network_error(what: str, exc: requests.RequestException) -> TelegramNetworkError:
    # requests puts the URL (and so the token) in its message: only the type name is kept;
    # raise it ``from None`` so the original is not chained either.
    return TelegramNetworkError(
        f"Telegram {what} failed: network error ({type(exc).__name__})", method=what
    )


def _form_value(value) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _backoff(attempt: int) -> float:
    return float(min(2 ** (attempt - 1), 8))


def _retry_after(body: dict, cap: float | None = MAX_RETRY_AFTER) -> float:
    parameters = body.get("parameters")
    value = parameters.get("retry_after") if isinstance(parameters, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 1.0
    value = max(float(value), 0.0)
    return value if cap is None else min(value, cap)


class TelegramClient:
    def __init__(self, token: str, *, base_url: str, session=None, sleep=None, on_error=None):
        if not token or not isinstance(token, str):
            raise TelegramError("A bot token is required.")
        if not base_url:
            raise TelegramError("The Bot API base URL is required.")
        self._token = token
        self._base_url = base_url.rstrip("/")
        self._session = session or requests.Session()
        self._sleep = sleep or _sleep
        # Called with each error before it is raised (the server records them durably);
        # it must not raise.
        self._on_error = on_error

    def __repr__(self) -> str:  # never show the token
        return f"<TelegramClient base_url={self._base_url!r}>"

    def call_once(self, method: str, payload: dict | None = None) -> object:
        """One attempt, no waiting: the outbox sender decides on 429s and 5xx itself."""
        return self._call(method, payload, attempts=1)

    def send_file_once(self, method: str, payload: dict, field: str, file_name: str, handle):
        """One multipart upload (sendPhoto, sendDocument, …), no waiting, like call_once."""
        return self._call(method, payload, attempts=1, files={field: (file_name, handle)})

    def _call(
        self,
        method: str,
        payload: dict | None = None,
        attempts: int = MAX_ATTEMPTS,
        files: dict | None = None,
    ):
        try:
            return self._attempts(method, payload, attempts, files)
        except TelegramError as exc:
            self._report(exc)
            raise

    def _report(self, exc: TelegramError) -> None:
        if self._on_error is not None:
            self._on_error(exc)

    def _attempts(self, method: str, payload: dict | None, attempts: int, files: dict | None):
        url = f"{self._base_url}/bot{self._token}/{method}"
        if files:
            # Multipart: every other field is a form value (objects as JSON, as the Bot API
            # expects for reply_markup).
            content = {"data": {k: _form_value(v) for k, v in (payload or {}).items()}}
            content["files"] = files
        else:
            content = {"json": payload or {}}
        for attempt in range(1, attempts + 1):
            try:
                response = self._session.post(
                    url, **content, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)
                )
            except requests.RequestException as exc:
                if attempt == attempts:
                    raise _network_error(method, exc) from None
                self._sleep(_backoff(attempt))
                continue
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                body = {}
            if response.status_code == 429 and attempt < attempts:
                self._sleep(_retry_after(body))
                continue
            if response.status_code >= 500 and attempt < attempts:
                self._sleep(_backoff(attempt))
                continue
            if not body.get("ok"):
                code = body.get("error_code")
                if isinstance(code, bool) or not isinstance(code, int):
                    code = response.status_code
                description = body.get("description")
                raise TelegramApiError(
                    method,
                    code,
                    str(description)[:500] if description else "no description",
                    _retry_after(body, cap=None) if code == 429 else None,
                )
            return body.get("result")
        raise TelegramApiError(method, None, "gave up after retries")  # pragma: no cover

    def get_me(self) -> BotInfo:
        result = self._call("getMe")
        if not isinstance(result, dict) or not isinstance(result.get("id"), int):
            raise TelegramApiError("getMe", None, "unexpected response shape")
        return BotInfo(
            id=result["id"],
            username=str(result.get("username") or ""),
            first_name=str(result.get("first_name") or ""),
        )

    def set_webhook(self, url: str, secret_token: str, allowed_updates: list[str]) -> bool:
        return bool(
            self._call(
                "setWebhook",
                {"url": url, "secret_token": secret_token, "allowed_updates": allowed_updates},
            )
        )

    def delete_webhook(self) -> bool:
        # Pending updates stay with Telegram (readable by the bot's new owner via getUpdates).
        return bool(self._call("deleteWebhook", {"drop_pending_updates": False}))

    def get_webhook_info(self) -> dict:
        result = self._call("getWebhookInfo")
        return result if isinstance(result, dict) else {}

    def answer_callback_query(self, callback_query_id: str) -> bool:
        return bool(self._call("answerCallbackQuery", {"callback_query_id": callback_query_id}))

    def send_message(self, chat_id: int | str, text: str, **options) -> list[dict]:
        """Send ``text``, split into ≤ 4096-character messages; returns the sent messages."""
        sent = []
        for chunk in split_message(text or " "):
            sent.append(self._call("sendMessage", {"chat_id": chat_id, "text": chunk, **options}))
        return sent

    def get_file(self, file_id: str) -> dict:
        result = self._call("getFile", {"file_id": file_id})
        return result if isinstance(result, dict) else {}

    def download_file(self, file_path: str, max_bytes: int) -> bytes:
        url = f"{self._base_url}/file/bot{self._token}/{file_path.lstrip('/')}"
        try:
            response = self._session.get(url, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), stream=True)
        except requests.RequestException as exc:
            error = _network_error("file download", exc)
            self._report(error)
            raise error from None
        if response.status_code != 200:
            error = TelegramApiError("downloadFile", response.status_code, "download refused")
            self._report(error)
            raise error
        data = bytearray()
        try:
            for chunk in response.iter_content(64 * 1024):
                data.extend(chunk)
                if len(data) > max_bytes:
                    response.close()
                    raise TelegramApiError(
                        "downloadFile", None, f"file larger than {max_bytes} bytes"
                    )
        except requests.RequestException as exc:
            raise _network_error("file download", exc) from None
        return bytes(data)
