"""The webhook as a DRF view: SPEC §5.3's answers whatever DRF's defaults would do, and a
query count that does not grow with the data (ARCHITECTURE.md: query counts are tested)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from telegram.models import IdentityBinding, TelegramUpdate
from tests.telegram.conftest import bind, text_update
from workers.models import Message

URL = "/telegram/webhook/100/"
SECRET = {"HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN": "s" * 40}


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "options", "head"])
def test_every_other_method_is_405_json_with_allow_post(make_bot, client, method):
    make_bot("alpha", "100")
    # With or without the secret: the method is refused before anybody is authenticated.
    assert getattr(client, method)(URL, **SECRET).status_code == 405
    response = getattr(client, method)(URL)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    if method != "head":
        assert response.json() == {"error": "method_not_allowed"}
    assert not TelegramUpdate.objects.exists()


def test_answers_are_json_whatever_the_client_accepts(make_bot, client):
    make_bot("alpha", "100")
    body = json.dumps(text_update(1, "hi"))
    for accept in ("text/html", "application/xml", "*/*"):
        response = client.post(
            URL, body, content_type="application/json", HTTP_ACCEPT=accept, **SECRET
        )
        assert response["Content-Type"] == "application/json"
    assert json.loads(response.content)["status"] == "duplicate"
    refused = client.post(URL, body, content_type="application/json", HTTP_ACCEPT="text/html")
    assert refused.status_code == 403 and refused["Content-Type"] == "application/json"
    assert refused.json() == {"error": "invalid_secret_token"}


def test_no_csrf_check_even_for_a_logged_in_browser(make_bot):
    """Telegram sends no CSRF token; a session cookie on the request must not add a check
    (DRF's SessionAuthentication would enforce one)."""
    make_bot("alpha", "100")
    staff = get_user_model().objects.create_superuser("root", "r@example.com", "pw")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff)
    response = browser.post(
        URL, json.dumps(text_update(1, "hi")), content_type="application/json", **SECRET
    )
    assert response.status_code == 200 and response.json()["status"] == "enqueued"


def test_a_body_that_is_not_json_is_400_not_415(make_bot, client):
    make_bot("alpha", "100")
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = client.post(URL, b"update_id=1", content_type=content_type, **SECRET)
        assert response.status_code == 400 and response.json() == {"error": "invalid_update"}
    # A JSON update is taken whatever content type the sender named.
    body = json.dumps(text_update(1, "hi"))
    response = client.post(URL, body, content_type="text/plain", **SECRET)
    assert response.json()["status"] == "enqueued"


def _crowd(make_bot, size: int):
    """``size`` other bots, bindings on this bot and recorded updates of it."""
    for n in range(size):
        other = make_bot(f"other{n}", str(1000 + n))
        bind(other, f"other-consumer-{n}", user="555")
    bot = make_bot("alpha", "100")
    for n in range(size):
        bind(bot, f"consumer-{n}", user=str(2000 + n))
    TelegramUpdate.objects.bulk_create(
        TelegramUpdate(bot_identity="100", update_id=10_000 + n, outcome="enqueued")
        for n in range(size)
    )
    return bot


@pytest.mark.parametrize("size", [1, 50])
@pytest.mark.parametrize("bound", [False, True])
def test_query_counts_do_not_grow_with_the_data(
    make_bot, post_update, django_assert_num_queries, size, bound
):
    bot = _crowd(make_bot, size)
    if bound:
        bind(bot, "the-sender", user="555")
    # Warm the per-process runtime config and decrypted secret, as a running server has.
    assert post_update("100", text_update(1, "warm up")).json()["status"] == "enqueued"
    assert post_update("100", text_update(2, "same conversation")).json()["status"] == "enqueued"
    one_statement = connection.vendor == "postgresql"  # telegram.sql.admit_at_once
    expected = {
        # bot+secrets+seen+binding, then on PostgreSQL one statement for bucket, queue cap,
        # queue row and update record (a server runs it without a transaction; here a
        # savepoint pair stands for it), elsewhere the transaction's savepoint pair, bucket,
        # cap, conversation, message, record; (+ the binding's row with its agent when the
        # sender is bound)
        "new": (4 if one_statement else 8) + (1 if bound else 0),
        # bot+secrets+seen: all a redelivery costs
        "duplicate": 1,
    }
    with django_assert_num_queries(expected["new"]):
        response = post_update("100", text_update(3, "hello"))
    assert response.json()["status"] == "enqueued"
    with django_assert_num_queries(expected["duplicate"]):
        response = post_update("100", text_update(3, "hello"))
    assert response.json() == {"ok": True, "status": "duplicate"}
    assert IdentityBinding.objects.count() >= 2 * size
    assert Message.objects.filter(payload__metadata__update_id="3").count() == 1
