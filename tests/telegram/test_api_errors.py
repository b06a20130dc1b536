"""External API errors kept for the admin (agents.external_errors, SPEC §16 and §24): every
Fly API error and every Telegram error that is not one request's own refusal becomes a row
(a burst of alike errors one row with a count), never with a token; old rows are pruned."""

from __future__ import annotations

import datetime as dt

import pytest
import requests
import responses
import time_machine

from agents.external_errors import (
    COALESCE_WINDOW,
    RETENTION,
    ExternalApiError,
    prune_api_errors,
    record_api_error,
)
from fly.client import FlyApiError, FlyClient
from telegram.bot_api import TelegramApiError, TelegramError
from telegram.bots import agent_client
from tests.telegram.conftest import TG

FLY = "http://fly.test/v1"
FLY_TOKEN = "fly-secret-token-xyz"
T0 = dt.datetime(2026, 5, 4, 10, 0, tzinfo=dt.UTC)


def fly_client() -> FlyClient:
    return FlyClient(FLY_TOKEN, base_url=FLY, sleep=lambda s: None)


@responses.activate
def test_a_fly_api_error_is_recorded_without_the_token(db):
    responses.post(
        f"{FLY}/apps/af-w/machines",
        status=422,
        body=f"no capacity in iad (Bearer {FLY_TOKEN})",
    )
    with pytest.raises(FlyApiError):
        fly_client().create_machine("af-w", {"region": "iad"})
    error = ExternalApiError.objects.get()
    assert (error.service, error.operation, error.subject, error.status_code) == (
        "fly",
        "POST /apps/{app}/machines",
        "af-w",
        422,
    )
    assert "no capacity in iad" in error.detail and FLY_TOKEN not in error.detail


@responses.activate
def test_fly_ids_are_generalised_and_not_found_is_not_an_error(db):
    for machine in ("m_1", "m_2"):
        responses.post(f"{FLY}/apps/af-w/machines/{machine}/stop", status=500, body="oops")
    responses.delete(f"{FLY}/apps/af-w/machines/m_3", status=404, body="machine not found")
    for machine in ("m_1", "m_2"):
        with pytest.raises(FlyApiError):
            fly_client().stop_machine("af-w", machine)
    with pytest.raises(FlyApiError):
        fly_client().destroy_machine("af-w", "m_3")
    # Two failed stops of different machines: one row, counted twice.
    [error] = ExternalApiError.objects.all()
    assert error.operation == "POST /apps/{app}/machines/{id}/stop" and error.count == 2


def test_fly_network_error_is_recorded_with_no_status(db):
    class Down:
        def request(self, *args, **kwargs):
            raise requests.ConnectionError(f"Bearer {FLY_TOKEN}")

    client = FlyClient(FLY_TOKEN, base_url=FLY, session=Down(), sleep=lambda s: None)
    with pytest.raises(FlyApiError):
        client.list_machines("af-w")
    error = ExternalApiError.objects.get()
    assert error.status_code is None and "network error" in error.detail
    assert FLY_TOKEN not in error.detail


@pytest.mark.parametrize(
    "status, recorded", [(500, True), (401, True), (429, True), (403, False), (400, False)]
)
def test_telegram_errors_worth_an_admin_are_recorded(make_bot, tg, status, recorded):
    make_bot("alpha", "100")
    body = {"ok": False, "error_code": status, "description": f"answer {status}"}
    if status == 429:
        body["parameters"] = {"retry_after": 3}
    tg.post(f"{TG}/bot100:TOKEN-alpha/sendChatAction", json=body, status=status)
    with pytest.raises(TelegramApiError):
        agent_client("alpha").call_once("sendChatAction", {"chat_id": 1, "action": "typing"})
    rows = list(
        ExternalApiError.objects.values_list("service", "operation", "subject", "status_code")
    )
    assert rows == ([("telegram", "sendChatAction", "alpha", status)] if recorded else [])
    assert not ExternalApiError.objects.filter(detail__contains="TOKEN").exists()


def test_telegram_network_errors_are_recorded(make_bot, tg):
    make_bot("alpha", "100")
    tg.post(f"{TG}/bot100:TOKEN-alpha/getWebhookInfo", body=requests.ConnectionError("down"))
    with pytest.raises(TelegramError):
        agent_client("alpha").get_webhook_info()
    error = ExternalApiError.objects.get()
    assert (error.operation, error.status_code) == ("getWebhookInfo", None)
    assert "network error" in error.detail and "TOKEN" not in error.detail


def test_a_burst_is_one_row_until_the_window_passes(db):
    with time_machine.travel(T0, tick=False) as clock:
        for _ in range(3):
            record_api_error(
                "telegram", "sendMessage", "502 Bad Gateway", subject="a", status_code=502
            )
        clock.shift(COALESCE_WINDOW + dt.timedelta(seconds=1))
        record_api_error("telegram", "sendMessage", "502 again", subject="a", status_code=502)
        record_api_error("telegram", "sendMessage", "other bot", subject="b", status_code=502)
    rows = list(ExternalApiError.objects.order_by("id").values_list("subject", "count", "detail"))
    assert rows == [("a", 3, "502 Bad Gateway"), ("a", 1, "502 again"), ("b", 1, "other bot")]


def test_old_rows_are_pruned(db):
    with time_machine.travel(T0, tick=False):
        record_api_error("fly", "GET /apps/{app}", "old", status_code=500)
    with time_machine.travel(T0 + RETENTION + dt.timedelta(hours=1), tick=False):
        record_api_error("fly", "GET /apps/{app}/volumes", "new", status_code=500)
        assert prune_api_errors() == 1
    assert list(ExternalApiError.objects.values_list("detail", flat=True)) == ["new"]


def test_recording_never_breaks_the_caller(db, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("database gone")

    monkeypatch.setattr(ExternalApiError.objects, "create", broken)
    record_api_error("fly", "GET /apps/{app}", "x", status_code=500)  # logged, not raised
    assert not ExternalApiError.objects.exists()
