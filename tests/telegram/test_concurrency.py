"""Redeliveries racing each other on real concurrent PostgreSQL connections."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
from django.db import connections
from django.test import Client

from tests.telegram.conftest import text_update
from workers.models import Message

UPDATES = 15
COPIES = 4


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_redeliveries_enqueue_each_update_once(make_bot):
    make_bot("alpha", "100")
    statuses: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(COPIES)

    def deliver(update_id: int):
        try:
            client = Client()
            barrier.wait(timeout=10)
            response = client.post(
                "/telegram/webhook/100/",
                json.dumps(text_update(update_id, f"m{update_id}", user=update_id)),
                content_type="application/json",
                HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN="s" * 40,
            )
            with lock:
                statuses.append(response.json()["status"])
        except BaseException as exc:  # surfaced below
            with lock:
                errors.append(exc)
        finally:
            connections.close_all()

    for update_id in range(1, UPDATES + 1):
        threads = [threading.Thread(target=deliver, args=(update_id,)) for _ in range(COPIES)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    counts = Counter(statuses)
    assert counts["enqueued"] == UPDATES, counts
    assert counts["duplicate"] == UPDATES * (COPIES - 1), counts
    assert Message.objects.count() == UPDATES
    texts = sorted(Message.objects.values_list("payload__message_text", flat=True))
    assert texts == sorted(f"m{i}" for i in range(1, UPDATES + 1))
