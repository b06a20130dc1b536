"""Handoff (SPEC §6.2): a conversation released by a live worker is claimable by another
worker only once that worker's snapshot of it is finalized or failed, or after
handoff_timeout — whatever the claim path."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from agents.models import Conversation, RuntimeConfig
from tests.workers.test_snapshots import finalize, upload
from workers import leases
from workers.fair_share import reassign_idle_workers
from workers.lifecycle import transition_worker
from workers.models import Message, Worker

API = "/api/v1/worker"


@pytest.fixture
def released(alpha_agent, enqueue, make_worker, worker_api, monkeypatch):
    """w-old served conv-s, then fair share moved it to conv-next (so it must snapshot
    conv-s); conv-s has a new message waiting. Returns (the old worker's API client, the
    time of the handoff)."""
    monkeypatch.setattr("workers.triggers.request_reconcile", lambda: None)
    enqueue("conv-s", "alpha", "first")
    old, token = make_worker("w-old", heartbeat_at=timezone.now())
    job = leases.claim_next_job(old)
    leases.complete_job(old, job.message.pk, job.lease_id)
    enqueue("conv-next", "alpha", "elsewhere")
    nxt = Conversation.objects.get(conversation_id="conv-next")
    start = timezone.now() + dt.timedelta(seconds=60)
    with time_machine.travel(start, tick=False):
        Worker.objects.filter(pk=old.pk).update(heartbeat_at=start)
        assert reassign_idle_workers([(nxt.pk, "alpha")], RuntimeConfig.get(), start)
    enqueue("conv-s", "alpha", "second")
    return worker_api(token), start


def claim_by_every_path(make_worker):
    """Claim once per path, each by a new worker (removed again, so it owns nothing):
    unassigned (whole queue), restricted to conv-s, and assigned to conv-s (the warm path's
    raw SQL). Returns the message texts claimed (None where refused); each claimed job is
    put back for the next path."""
    conversation = Conversation.objects.get(conversation_id="conv-s")
    paths = [
        ({}, {}),
        ({}, {"conversation_id": "conv-s"}),
        ({"assigned_conversation": conversation}, {}),
    ]
    texts = []
    for fields, kwargs in paths:
        worker = make_worker(heartbeat_at=timezone.now(), **fields)[0]
        job = leases.claim_next_job(worker, **kwargs)
        texts.append(job.message.payload["message_text"] if job else None)
        if job:
            Message.objects.filter(pk=job.message.pk).update(
                status="queued", lease_id="", claimed_by="", lease_expires_at=None
            )
        worker.delete()
    return texts


def refused_everywhere(make_worker, at):
    with time_machine.travel(at, tick=False):
        Worker.objects.update(heartbeat_at=at)
        assert claim_by_every_path(make_worker) == [None, None, None]


def test_claim_refused_until_the_snapshot_is_finalized(released, make_worker):
    api, start = released
    refused_everywhere(make_worker, start + dt.timedelta(seconds=1))
    snapshot_id = upload(api, conversation_id="conv-s")  # in progress: still refused
    refused_everywhere(make_worker, start + dt.timedelta(seconds=2))
    assert finalize(api, snapshot_id).status_code == 200
    conversation = Conversation.objects.get(conversation_id="conv-s")
    assert (conversation.handoff_from_worker, conversation.handoff_until) == ("", None)
    with time_machine.travel(start + dt.timedelta(seconds=3), tick=False):
        Worker.objects.update(heartbeat_at=timezone.now())
        assert claim_by_every_path(make_worker) == ["second", "second", "second"]


def test_claim_allowed_once_the_snapshot_failed(released, make_worker):
    api, start = released
    snapshot_id = upload(api, conversation_id="conv-s")
    refused_everywhere(make_worker, start + dt.timedelta(seconds=1))
    failed = api.post(f"{API}/snapshots/{snapshot_id}/fail/", {"error": "disk"}, format="json")
    assert failed.status_code == 200
    with time_machine.travel(start + dt.timedelta(seconds=2), tick=False):
        Worker.objects.update(heartbeat_at=timezone.now())
        assert claim_by_every_path(make_worker) == ["second", "second", "second"]


def test_claim_allowed_after_handoff_timeout(released, make_worker):
    _, start = released
    refused_everywhere(make_worker, start + dt.timedelta(seconds=119))
    with time_machine.travel(start + dt.timedelta(seconds=120), tick=False):
        Worker.objects.update(heartbeat_at=timezone.now())
        assert claim_by_every_path(make_worker) == ["second", "second", "second"]


def test_the_releasing_worker_itself_may_come_back(released):
    _, start = released
    conversation = Conversation.objects.get(conversation_id="conv-s")
    old = Worker.objects.get(worker_id="w-old")
    assert not conversation.in_handoff_for(old.worker_id, start)
    assert conversation.in_handoff_for("someone-else", start)


def test_drain_of_a_live_worker_hands_its_conversation_off(
    alpha_agent, enqueue, make_worker, runtime_config
):
    RuntimeConfig.objects.filter(pk=1).update(handoff_timeout_seconds=10)  # runtime config
    enqueue("conv-d", "alpha")
    worker = make_worker("w-d", heartbeat_at=timezone.now())[0]
    job = leases.claim_next_job(worker)
    leases.complete_job(worker, job.message.pk, job.lease_id)
    enqueue("conv-d", "alpha", "next")
    worker.refresh_from_db()
    now = timezone.now()
    with time_machine.travel(now, tick=False):
        transition_worker(worker, Worker.DRAINING, reason="drained by admin")
    conversation = Conversation.objects.get(conversation_id="conv-d")
    assert conversation.handoff_from_worker == "w-d"
    assert conversation.handoff_until == now + dt.timedelta(seconds=10)
    assert leases.claim_next_job(make_worker("w-e", heartbeat_at=timezone.now())[0]) is None
    # Its machine is torn down without a snapshot: the handoff ends with it.
    transition_worker(worker, Worker.STOPPING, reason="final snapshot timed out")
    assert leases.claim_next_job(Worker.objects.get(worker_id="w-e")) is not None


def test_drain_of_a_gone_or_stale_worker_hands_nothing_off(alpha_agent, enqueue, make_worker):
    enqueue("conv-g", "alpha")
    worker = make_worker("w-g", heartbeat_at=timezone.now())[0]
    job = leases.claim_next_job(worker)
    leases.complete_job(worker, job.message.pk, job.lease_id)
    worker.refresh_from_db()
    transition_worker(worker, Worker.DRAINING, reason="machine gone", alive=False)
    conversation = Conversation.objects.get(conversation_id="conv-g")
    assert (conversation.handoff_from_worker, conversation.handoff_until) == ("", None)
