"""The worker's own Telegram sender (SPEC §12 compatibility mode): what the loop tests in
test_runtime_loop.py do not reach — network errors, 5xx retries, the token kept out of
errors, and the base URL a worker is configured with."""

from __future__ import annotations

import json

import pytest
import requests
import responses

from tests.workers.test_runtime_loop import FakeServer, make_job
from workers.runtime.runner import WorkerRuntime, WorkerSettings
from workers.runtime.telegram_sender import TelegramSender, TelegramSendError

TG = "https://tg.test"
TOKEN = "123:SECRET-bot-token-abcdef"
URL = f"{TG}/bot{TOKEN}/sendMessage"


@responses.activate
def test_network_errors_are_retried_then_reported_without_the_token():
    # requests puts the URL, and so the token, in its own message.
    responses.post(URL, body=requests.ConnectionError(f"cannot reach {URL}"))
    sleeps = []
    sender = TelegramSender(TOKEN, base_url=TG, sleep=sleeps.append)
    with pytest.raises(TelegramSendError) as info:
        sender.send_message(55, "hi")
    assert str(info.value) == "sendMessage failed: network error (ConnectionError)"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert len(responses.calls) == 4 and sleeps == [1, 2, 4]
    assert TOKEN not in repr(sender)


@responses.activate
def test_a_5xx_is_retried_with_backoff_then_sent():
    responses.post(URL, status=502, body="bad gateway")
    responses.post(URL, json={"ok": True, "result": {"message_id": 9}})
    sleeps = []
    sent = TelegramSender(TOKEN, base_url=TG, sleep=sleeps.append).send_message(55, "hi")
    assert sent == [{"message_id": 9}] and sleeps == [1]


@responses.activate
def test_an_empty_reply_is_sent_as_one_blank_message():
    responses.post(URL, json={"ok": True, "result": {}})
    TelegramSender(TOKEN, base_url=TG).send_message(55, "")
    assert json.loads(responses.calls[0].request.body) == {"chat_id": 55, "text": " "}


def test_a_token_is_required():
    with pytest.raises(TelegramSendError, match="token is required"):
        TelegramSender("")


@responses.activate
def test_the_runtime_sends_to_its_configured_base_url(tmp_path):
    """Without an injected sender, the worker uses its own, at ``telegram_api_base_url``."""
    responses.post(
        f"http://sandbox.test/tg/bot{TOKEN}/sendMessage", json={"ok": True, "result": {}}
    )
    settings = WorkerSettings(
        api_url="http://srv",
        token="t",
        worker_id="w",
        data_dir=tmp_path / "data",
        telegram_api_base_url="http://sandbox.test/tg/",
    )
    runtime = WorkerRuntime(settings, FakeServer(), lambda ctx: "pong")
    assert runtime.process(make_job()) == "done"
    assert json.loads(responses.calls[0].request.body) == {"chat_id": "55", "text": "pong"}
