"""The Bot API client (SPEC §5.4) and the media task (SPEC §5.3 step 7)."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
import requests
import responses
from django.utils import timezone

from telegram import bot_api as client_module
from telegram import media
from telegram.bot_api import (
    CONNECT_TIMEOUT,
    MAX_ATTEMPTS,
    READ_TIMEOUT,
    TelegramApiError,
    TelegramClient,
    TelegramNetworkError,
)
from tests.telegram.conftest import TG, text_update
from workers.models import Message, MessageAttachment

TOKEN = "123456:SECRET-token-value"


class FakeSession:
    """Records what the client sends; answers from a script."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def post(self, url, json=None, timeout=None):
        self.calls.append({"url": url, "json": json, "timeout": timeout})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeResponse:
    def __init__(self, status, body):
        self.status_code = status
        self._body = body

    def json(self):
        if isinstance(self._body, str):
            raise ValueError("not json")
        return self._body


def test_every_call_posts_json_with_timeouts():
    session = FakeSession([FakeResponse(200, {"ok": True, "result": {"id": 1, "username": "b"}})])
    info = TelegramClient(TOKEN, base_url=TG, session=session).get_me()
    assert (info.id, info.username) == (1, "b")
    [call] = session.calls
    assert call["url"] == f"{TG}/bot{TOKEN}/getMe"
    assert call["timeout"] == (CONNECT_TIMEOUT, READ_TIMEOUT) == (5, 30)


def test_429_honours_retry_after_capped():
    sleeps = []
    session = FakeSession(
        [
            FakeResponse(429, {"ok": False, "error_code": 429, "parameters": {"retry_after": 7}}),
            FakeResponse(429, {"ok": False, "parameters": {"retry_after": 10_000}}),
            FakeResponse(429, {"ok": False, "parameters": {"retry_after": "soon"}}),
            FakeResponse(200, {"ok": True, "result": True}),
        ]
    )
    assert (
        TelegramClient(TOKEN, base_url=TG, session=session, sleep=sleeps.append)._call("x") is True
    )
    assert sleeps == [7.0, 60.0, 1.0]


def test_5xx_retries_are_bounded_then_a_typed_error():
    sleeps = []
    session = FakeSession([FakeResponse(502, "<html>bad gateway</html>")] * MAX_ATTEMPTS)
    client = TelegramClient(TOKEN, base_url=TG, session=session, sleep=sleeps.append)
    with pytest.raises(TelegramApiError) as exc:
        client.send_message(1, "hi")
    assert len(session.calls) == MAX_ATTEMPTS == 4
    assert sleeps == [1.0, 2.0, 4.0]
    assert exc.value.error_code == 502 and exc.value.description == "no description"


def test_ok_false_is_a_typed_error_with_code_and_description():
    session = FakeSession(
        [FakeResponse(400, {"ok": False, "error_code": 400, "description": "Bad Request: x"})]
    )
    with pytest.raises(TelegramApiError) as exc:
        TelegramClient(TOKEN, base_url=TG, session=session).send_message(1, "hi")
    assert exc.value.error_code == 400 and exc.value.description == "Bad Request: x"
    assert exc.value.method == "sendMessage"
    assert len(session.calls) == 1  # 4xx is not retried


def test_non_object_json_is_an_error_not_a_crash():
    session = FakeSession([FakeResponse(429, [1, 2]), FakeResponse(200, ["odd"])])
    with pytest.raises(TelegramApiError):
        TelegramClient(TOKEN, base_url=TG, session=session, sleep=lambda s: None)._call("getMe")


def test_network_errors_never_carry_the_token(caplog):
    caplog.set_level(logging.DEBUG)
    leak = requests.ConnectionError(f"Max retries exceeded with url: /bot{TOKEN}/getMe")
    session = FakeSession([leak] * MAX_ATTEMPTS)
    with pytest.raises(TelegramNetworkError) as exc:
        TelegramClient(TOKEN, base_url=TG, session=session, sleep=lambda s: None).get_me()
    assert TOKEN not in str(exc.value) and TOKEN not in repr(exc.value)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    assert len(session.calls) == MAX_ATTEMPTS
    assert TOKEN not in caplog.text


def test_api_errors_never_carry_the_token():
    session = FakeSession([FakeResponse(401, {"ok": False, "description": "Unauthorized"})])
    client = TelegramClient(TOKEN, base_url=TG, session=session)
    with pytest.raises(TelegramApiError) as exc:
        client.get_me()
    assert TOKEN not in str(exc.value) and TOKEN not in repr(client)


def test_log_filter_redacts_tokens_in_urls():
    from config.logging_filters import RedactBotTokens

    record = logging.LogRecord("urllib3", logging.DEBUG, "", 0, "POST /bot%s/getMe", (TOKEN,), None)
    RedactBotTokens().filter(record)
    assert TOKEN not in record.getMessage() and "bot<redacted>" in record.getMessage()


def test_send_message_splits_above_4096():
    session = FakeSession([FakeResponse(200, {"ok": True, "result": {"n": i}}) for i in range(3)])
    text = "a" * 4096 + "\n" + "b" * 5000
    sent = TelegramClient(TOKEN, base_url=TG, session=session).send_message(7, text)
    assert len(sent) == 3
    texts = [c["json"]["text"] for c in session.calls]
    assert all(len(t) <= 4096 for t in texts)
    assert texts[0] == "a" * 4096 and "".join(texts[1:]) == "b" * 5000
    assert all(c["json"]["chat_id"] == 7 for c in session.calls)
    session = FakeSession([FakeResponse(200, {"ok": True, "result": {}})])
    assert len(TelegramClient(TOKEN, base_url=TG, session=session).send_message(7, "x" * 4096)) == 1


@responses.activate
def test_download_stops_above_the_limit():
    responses.get(f"{TG}/file/bot{TOKEN}/big.bin", body=b"x" * 2000)
    with pytest.raises(TelegramApiError, match="larger than 1000 bytes"):
        TelegramClient(TOKEN, base_url=TG).download_file("big.bin", 1000)
    responses.get(f"{TG}/file/bot{TOKEN}/ok.bin", body=b"y" * 10)
    assert TelegramClient(TOKEN, base_url=TG).download_file("/ok.bin", 1000) == b"y" * 10


def test_client_needs_a_token():
    with pytest.raises(client_module.TelegramError):
        TelegramClient("", base_url=TG)


# Media task ------------------------------------------------------------------------------


@pytest.fixture
def media_message(make_bot, post_update, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    make_bot("alpha", "100")

    def make(kind, item):
        update = {"update_id": 1, "message": {"from": {"id": 5}, "chat": {"id": 5}, kind: item}}
        body = post_update("100", update).json()
        return Message.objects.get(pk=body["message_id"])

    return make


@responses.activate
def test_media_is_fetched_and_the_message_released(media_message, monkeypatch):
    triggered = []
    monkeypatch.setattr("workers.triggers.request_reconcile", lambda: triggered.append(1))
    message = media_message("document", {"file_id": "F1", "file_name": "../../etc/passwd"})
    assert message.scheduled_for > timezone.now()  # held until its file is here
    token = "100:TOKEN-alpha"
    responses.post(
        f"{TG}/bot{token}/getFile",
        json={"ok": True, "result": {"file_id": "F1", "file_path": "documents/file_1.txt"}},
    )
    responses.get(f"{TG}/file/bot{token}/documents/file_1.txt", body=b"hello")
    assert media.fetch_message_attachments(message.pk) == {"fetched": 1, "failed": 0}
    assert json.loads(responses.calls[0].request.body) == {"file_id": "F1"}
    attachment = MessageAttachment.objects.get(message=message)
    assert attachment.status == "ready" and attachment.size_bytes == 5
    assert attachment.file.read() == b"hello"
    assert ".." not in attachment.file.name and "passwd" in attachment.file.name
    message.refresh_from_db()
    assert message.scheduled_for <= timezone.now() and triggered == [1]


@responses.activate
def test_too_large_or_failing_files_fail_but_release_the_message(media_message):
    big = media_message("video", {"file_id": "V", "file_size": 21 * 1024 * 1024})
    assert media.fetch_message_attachments(big.pk) == {"fetched": 0, "failed": 1}
    assert len(responses.calls) == 0  # not even asked: the Bot API serves ≤ 20 MB
    attachment = MessageAttachment.objects.get(message=big)
    assert attachment.status == "failed" and "larger than" in attachment.error
    big.refresh_from_db()
    assert big.scheduled_for <= timezone.now()


@responses.activate
def test_get_file_refusal_marks_failed_without_the_token(media_message, monkeypatch):
    monkeypatch.setattr("telegram.bot_api._sleep", lambda s: None)
    message = media_message("voice", {"file_id": "O"})
    responses.post(
        f"{TG}/bot100:TOKEN-alpha/getFile",
        status=400,
        json={"ok": False, "error_code": 400, "description": "Bad Request: file is too big"},
    )
    assert media.fetch_message_attachments(message.pk)["failed"] == 1
    attachment = MessageAttachment.objects.get(message=message)
    assert "file is too big" in attachment.error and "TOKEN-alpha" not in attachment.error
    message.refresh_from_db()
    assert message.scheduled_for <= timezone.now()


def test_attachments_expire_after_retention(media_message, tmp_path):
    from django.core.files.base import ContentFile

    message = media_message("photo", [{"file_id": "P", "width": 1, "height": 1}])
    attachment = MessageAttachment.objects.get(message=message)
    attachment.file.save("p.jpg", ContentFile(b"img"), save=False)
    MessageAttachment.objects.filter(pk=attachment.pk).update(
        file=attachment.file.name, status="ready"
    )
    path = attachment.file.path
    assert media.expire_old_attachments()["expired"] == 0
    later = attachment.expires_at + dt.timedelta(seconds=1)
    assert media.expire_old_attachments(now=later) == {"expired": 1, "files_deleted": 1}
    attachment.refresh_from_db()
    assert attachment.status == "expired" and not attachment.file
    import os

    assert not os.path.exists(path)
    assert media.expire_old_attachments(now=later)["expired"] == 0


def test_missing_message_is_a_no_op(db):
    assert media.fetch_message_attachments(987654) == {"fetched": 0, "failed": 0}


# Reply task and pruning -------------------------------------------------------------------


@responses.activate
def test_send_text_task_uses_the_agents_token(make_bot):
    from telegram.tasks import send_text

    make_bot("alpha", "100")
    responses.post(f"{TG}/bot100:TOKEN-alpha/sendMessage", json={"ok": True, "result": {}})
    assert send_text("alpha", "55", "hi") is True
    assert json.loads(responses.calls[0].request.body) == {"chat_id": "55", "text": "hi"}
    assert send_text("nobody", "55", "hi") is False


def test_prune_keeps_updates_at_least_48_hours(make_bot, post_update):
    from telegram.models import TelegramUpdate
    from telegram.tasks import prune_old_updates

    make_bot("alpha", "100")
    post_update("100", text_update(1, "a"))
    now = timezone.now()
    assert prune_old_updates(now=now + dt.timedelta(hours=47), keep_hours=1)["deleted_updates"] == 0
    assert TelegramUpdate.objects.count() == 1
    assert prune_old_updates(now=now + dt.timedelta(hours=73))["deleted_updates"] == 1
    assert TelegramUpdate.objects.count() == 0


def test_the_bot_api_client_needs_no_django():
    """ARCHITECTURE.md: bot_api.py is a plain HTTP client (the caller passes the base URL),
    usable wherever requests is, without settings or models."""
    import grimp

    graph = grimp.build_graph("telegram", include_external_packages=True, cache_dir=None)
    imported = graph.find_modules_directly_imported_by("telegram.bot_api")
    apps = ("django", "rest_framework", "config", "agents", "workers", "fly", "telegram")
    assert imported and not {name for name in imported if name.split(".")[0] in apps}
