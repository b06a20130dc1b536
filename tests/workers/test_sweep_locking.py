"""The lease sweep and a claim lock rows in the same order (worker, then message).

Before, the sweep locked expired messages first and their workers second, while a claim
locks its worker first and may then wait for a processing message of its conversation: the
two could deadlock. Now a worker that is locked elsewhere is skipped, with its messages,
until the next sweep.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from agents.models import AgentProfile, Conversation
from workers.models import Message, Worker
from workers.sweep import sweep_expired_leases

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _expired_job():
    agent = AgentProfile.objects.create(agent_key="sweep")
    conversation = Conversation.objects.create(conversation_id="c-sweep", agent=agent)
    worker = Worker.objects.create(worker_id="w-sweep", heartbeat_at=timezone.now())
    past = timezone.now() - dt.timedelta(seconds=5)
    message = Message.objects.create(
        conversation=conversation,
        agent_key="sweep",
        payload={},
        status=Message.PROCESSING,
        claimed_by=worker.worker_id,
        lease_id="lease",
        lease_expires_at=past,
    )
    return worker, message


def test_sweep_skips_a_worker_locked_by_a_claim_instead_of_waiting_for_it():
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's")
    worker, message = _expired_job()
    locked, release = threading.Event(), threading.Event()

    def claim_in_progress():
        # What a claim holds while it looks at its conversation: its own worker row.
        try:
            with transaction.atomic():
                Worker.objects.select_for_update().get(pk=worker.pk)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=claim_in_progress)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        report = sweep_expired_leases()
        took = time.monotonic() - started
        assert took < 2, f"the sweep waited {took:.1f} s for the claim's worker row"
        assert report == {"requeued": 0, "dead_lettered": 0}
        # The message was not locked by the sweep either: the claim could take it.
        with transaction.atomic():
            row = Message.objects.select_for_update(nowait=True).get(pk=message.pk)
            assert row.status == Message.PROCESSING
    finally:
        release.set()
        holder.join(10)
    # Once the worker is free, the next sweep requeues the job as usual.
    assert sweep_expired_leases() == {"requeued": 1, "dead_lettered": 0}
    message.refresh_from_db()
    assert message.status == Message.QUEUED and message.attempts == 1
