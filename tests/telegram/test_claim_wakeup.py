"""A Telegram update wakes a long-polling claim at once (SPEC §7, §22): the webhook's own
fast paths insert the queue row in raw SQL (telegram.sql_admit), which no model signal
sees, so the wake-up must come with the enqueue itself."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from django.utils import timezone

from tests.telegram.conftest import post_at_once, text_update
from workers import claim_wait
from workers.models import Message

API = "/api/v1/worker"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("known", [False, True])
def test_a_webhook_update_wakes_a_waiting_claim_at_once(
    make_bot, make_worker, worker_api, monkeypatch, known
):
    # Without a wake-up the waiter would only find the job at its next recheck (4 s here).
    monkeypatch.setattr(claim_wait, "RECHECK", 4.0)
    make_bot("alpha", "100")
    if known:
        # The chat's conversation and its sender's bucket exist: on PostgreSQL the next
        # update is admitted in one statement (telegram.sql_admit.admit_at_once).
        assert post_at_once([text_update(1, "first", user=7)]) == ["enqueued"]
        Message.objects.update(status=Message.DONE)
    _, token = make_worker("w-woken", heartbeat_at=timezone.now())

    def post_later():
        time.sleep(0.4)
        try:
            assert post_at_once([text_update(2, "hi", user=7)]) == ["enqueued"]
        finally:
            connection.close()

    thread = threading.Thread(target=post_later)
    thread.start()
    started = time.monotonic()
    response = worker_api(token).post(f"{API}/claim/", {"wait_seconds": 10}, format="json")
    elapsed = time.monotonic() - started
    thread.join()
    assert response.status_code == 200, response.content
    job = response.json()["job"]
    assert job is not None and job["payload"]["message_text"] == "hi"
    assert 0.35 <= elapsed < 2.0
