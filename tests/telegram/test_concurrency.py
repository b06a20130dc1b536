"""Redeliveries racing each other on real concurrent PostgreSQL connections."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.telegram.conftest import post_at_once, text_update
from workers.models import Message

UPDATES = 15
COPIES = 4


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_redeliveries_enqueue_each_update_once(make_bot):
    make_bot("alpha", "100")
    statuses: list[str] = []
    for update_id in range(1, UPDATES + 1):
        update = text_update(update_id, f"m{update_id}", user=update_id)
        statuses += post_at_once([update] * COPIES)
    counts = Counter(statuses)
    assert counts["enqueued"] == UPDATES, counts
    assert counts["duplicate"] == UPDATES * (COPIES - 1), counts
    assert Message.objects.count() == UPDATES
    texts = sorted(Message.objects.values_list("payload__message_text", flat=True))
    assert texts == sorted(f"m{i}" for i in range(1, UPDATES + 1))
