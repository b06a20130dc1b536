"""Fair share of a full fleet (SPEC §6.2): with max_workers reached and a conversation
waiting, reconcile moves the worker idle longest to it; busy and recently active workers
keep their conversations."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from agents.models import AuditEvent, Conversation, RuntimeConfig
from tests.workers.test_reconcile import fake_provider  # noqa: F401 (fixture)
from workers import leases
from workers.lifecycle import control_state
from workers.models import Message, Worker
from workers.reconcile import reconcile


@pytest.fixture
def fleet(fake_provider, alpha_agent, enqueue, make_worker, monkeypatch):  # noqa: F811
    """``fleet(worker_id, conversation_id, idle_seconds)``: a live worker that served one
    job in its conversation and has been idle for ``idle_seconds``; the fleet is full
    (max_workers = the workers made so far, so nothing can be spawned). Enqueues trigger no
    reconcile: each test runs its passes itself."""
    monkeypatch.setattr("workers.triggers.request_reconcile", lambda: None)
    made = []

    def make(worker_id, conversation_id, idle_seconds, **fields):
        now = timezone.now()
        enqueue(conversation_id, "alpha", "earlier")
        worker, _ = make_worker(worker_id, heartbeat_at=now)
        job = leases.claim_next_job(worker)
        assert job is not None and job.message.conversation.conversation_id == conversation_id
        leases.complete_job(worker, job.message.pk, job.lease_id)
        idle = now - dt.timedelta(seconds=idle_seconds)
        Worker.objects.filter(pk=worker.pk).update(
            idle_since=idle, last_claim_at=idle, assigned_at=idle, **fields
        )
        made.append(worker_id)
        RuntimeConfig.objects.filter(pk=1).update(max_workers=len(made))
        return worker

    return make


def assigned(worker_id):
    worker = Worker.objects.select_related("assigned_conversation").get(worker_id=worker_id)
    return worker.assigned_conversation.conversation_id


def handoff(conversation_id):
    conversation = Conversation.objects.get(conversation_id=conversation_id)
    return conversation.handoff_from_worker, conversation.handoff_until


def test_longest_idle_worker_takes_the_waiting_conversation(fleet, enqueue, fake_provider):  # noqa: F811
    fleet("w-recent", "c-recent", idle_seconds=31)
    fleet("w-oldest", "c-oldest", idle_seconds=300)
    fleet("w-middle", "c-middle", idle_seconds=120)
    now = timezone.now()
    with time_machine.travel(now, tick=False):
        enqueue("c-new", "alpha", "waiting")
        assert len(reconcile().reassigned) == 1
    assert fake_provider.spawned == []  # max_workers reached: nothing spawned
    assert assigned("w-oldest") == "c-new"
    assert assigned("w-middle") == "c-middle" and assigned("w-recent") == "c-recent"
    # Its old conversation is handed off until its snapshot of it is stored.
    assert handoff("c-oldest") == ("w-oldest", now + dt.timedelta(seconds=120))
    assert handoff("c-middle") == ("", None)
    event = AuditEvent.objects.filter(action="workers.reconcile").latest("id")
    assert event.details["reassigned"] and event.details["reassigned"][0].startswith("w-oldest")
    # The worker learns of it from control, and its next claim is the waiting job.
    worker = Worker.objects.get(worker_id="w-oldest")
    assert control_state(worker)["conversation_id"] == "c-new"
    job = leases.claim_next_job(worker)
    assert job.message.conversation.conversation_id == "c-new"
    assert job.message.payload["message_text"] == "waiting"


def test_one_idle_worker_per_waiting_conversation_oldest_first(fleet, enqueue):
    fleet("w-a", "c-a", idle_seconds=100)
    fleet("w-b", "c-b", idle_seconds=200)
    fleet("w-busy", "c-busy", idle_seconds=500)
    Worker.objects.filter(worker_id="w-busy").update(load=1)
    enqueue("c-first", "alpha", "1")
    enqueue("c-second", "alpha", "2")
    enqueue("c-third", "alpha", "3")
    reconcile()
    assert assigned("w-b") == "c-first"  # idle longest: the oldest waiting conversation
    assert assigned("w-a") == "c-second"
    assert assigned("w-busy") == "c-busy"  # busy: never moved
    assert reconcile().reassigned == []  # c-third waits for the next idle worker


def test_busy_and_recently_active_workers_are_not_reassigned(fleet, enqueue, runtime_config):
    fleet("w-recent", "c-recent", idle_seconds=10)
    fleet("w-busy", "c-busy", idle_seconds=3600)
    Worker.objects.filter(worker_id="w-busy").update(load=1, assigned_lease_id="lease")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        enqueue("c-new", "alpha")
        assert reconcile().reassigned == []
    assert assigned("w-recent") == "c-recent" and assigned("w-busy") == "c-busy"
    # reassign_after_seconds (30 s by default) after its last job, the idle one moves.
    with time_machine.travel(start + dt.timedelta(seconds=19), tick=False):
        Worker.objects.update(heartbeat_at=timezone.now())
        assert reconcile().reassigned == []
    with time_machine.travel(start + dt.timedelta(seconds=20), tick=False):
        Worker.objects.update(heartbeat_at=timezone.now())
        assert [r.split(":")[0] for r in reconcile().reassigned] == ["w-recent"]
    assert assigned("w-recent") == "c-new" and assigned("w-busy") == "c-busy"


def test_reassign_after_is_runtime_config(fleet, enqueue):
    fleet("w-1", "c-1", idle_seconds=40)
    RuntimeConfig.objects.filter(pk=1).update(reassign_after_seconds=60)
    enqueue("c-new", "alpha")
    assert reconcile().reassigned == []
    RuntimeConfig.objects.filter(pk=1).update(reassign_after_seconds=40)
    assert len(reconcile().reassigned) == 1


def test_no_reassignment_while_a_worker_may_be_spawned(fleet, enqueue, fake_provider):  # noqa: F811
    fleet("w-idle", "c-idle", idle_seconds=600)
    RuntimeConfig.objects.filter(pk=1).update(max_workers=2)
    enqueue("c-new", "alpha")
    report = reconcile()
    assert report.reassigned == []
    assert [r.conversation_id for r in fake_provider.spawned] == ["c-new"]
    assert assigned("w-idle") == "c-idle"


def test_worker_with_ready_work_of_its_own_is_not_idle(fleet, enqueue):
    fleet("w-1", "c-1", idle_seconds=600)
    enqueue("c-1", "alpha", "its own")  # it is about to claim this
    enqueue("c-new", "alpha")
    assert reconcile().reassigned == []
    assert assigned("w-1") == "c-1"


def test_stale_or_draining_workers_are_not_reassigned(fleet, enqueue, runtime_config):
    fleet("w-draining", "c-1", idle_seconds=600, status=Worker.DRAINING)
    stale = timezone.now() - dt.timedelta(seconds=runtime_config.stale_after_seconds - 1)
    fleet("w-stale-soon", "c-2", idle_seconds=600, heartbeat_at=stale)
    with time_machine.travel(timezone.now() + dt.timedelta(seconds=2), tick=False):
        enqueue("c-new", "alpha")
        report = reconcile()
    assert report.reassigned == []
    assert "w-stale-soon" in report.drained


def test_worker_that_never_claimed_leaves_no_handoff(fleet, enqueue, make_worker):
    fleet("w-1", "c-1", idle_seconds=600)
    # Spawned for c-2, whose job went elsewhere (dead-lettered by hand): it never claimed.
    enqueue("c-2", "alpha")
    Message.objects.filter(conversation__conversation_id="c-2").update(status="dead_letter")
    conversation = Conversation.objects.get(conversation_id="c-2")
    Worker.objects.filter(worker_id="w-1").update(
        assigned_conversation=conversation, last_claim_at=timezone.now() - dt.timedelta(hours=1)
    )
    enqueue("c-new", "alpha")
    reconcile()
    assert assigned("w-1") == "c-new"
    assert handoff("c-2") == ("", None)


def test_query_count_is_constant_in_queue_size(fleet, alpha_agent):
    """A pass that reassigns costs the same for 10 or 1,000 waiting conversations."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def seed(n, offset):
        conversations = Conversation.objects.bulk_create(
            Conversation(conversation_id=f"q{offset + i}", agent=alpha_agent) for i in range(n)
        )
        Message.objects.bulk_create(
            Message(conversation=c, agent_key="alpha", payload={}) for c in conversations
        )

    fleet("w-1", "c-1", idle_seconds=600)
    fleet("w-2", "c-2", idle_seconds=600)
    counts = []
    for n, offset in ((10, 0), (1000, 100)):
        Message.objects.filter(conversation__conversation_id__startswith="q").delete()
        idle = timezone.now() - dt.timedelta(seconds=600)
        for worker_id, conversation_id in (("w-1", "c-1"), ("w-2", "c-2")):
            Worker.objects.filter(worker_id=worker_id).update(
                assigned_conversation=Conversation.objects.get(conversation_id=conversation_id),
                idle_since=idle,
                assigned_at=idle,
                last_claim_at=idle,
            )
        seed(n, offset)
        with CaptureQueriesContext(connection) as queries:
            assert len(reconcile().reassigned) == 2
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1]
