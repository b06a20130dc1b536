"""Lease sweeper and claim rules at their time boundaries (SPEC §6.2–6.3)."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from workers import leases
from workers.models import Message, Worker


@pytest.fixture
def worker(db, make_worker):
    return make_worker("w1", heartbeat_at=timezone.now())[0]


def test_claim_order_is_priority_then_time_then_id(alpha_agent, enqueue, worker, make_worker):
    now = timezone.now()
    low = enqueue("c-low", "alpha", priority=10)
    high = enqueue("c-high", "alpha", priority=90)
    early = enqueue("c-early", "alpha", priority=10, scheduled_for=now - dt.timedelta(hours=1))
    later = enqueue("c-later", "alpha", scheduled_for=now + dt.timedelta(hours=1))
    order = []
    for n in range(4):
        w = make_worker(f"fresh-{n}", heartbeat_at=timezone.now())[0]
        job = leases.claim_next_job(w)
        order.append(job.message.pk if job else None)
    assert order == [high.pk, early.pk, low.pk, None]
    assert Message.objects.get(pk=later.pk).status == "queued"


def test_assigned_worker_keeps_to_its_conversation(alpha_agent, enqueue, worker):
    enqueue("c1", "alpha")
    job = leases.claim_next_job(worker)
    leases.complete_job(worker, job.message.pk, job.lease_id)
    enqueue("c2", "alpha")
    assert leases.claim_next_job(worker) is None  # c2 is not its conversation
    enqueue("c1", "alpha")
    assert leases.claim_next_job(worker).message.conversation.conversation_id == "c1"


def test_live_owner_blocks_other_workers(alpha_agent, enqueue, worker, make_worker):
    enqueue("c1", "alpha")
    job = leases.claim_next_job(worker)
    leases.complete_job(worker, job.message.pk, job.lease_id)
    enqueue("c1", "alpha")
    other = make_worker("w2", heartbeat_at=timezone.now())[0]
    assert leases.claim_next_job(other) is None
    Worker.objects.filter(pk=worker.pk).update(
        heartbeat_at=timezone.now() - dt.timedelta(seconds=421)
    )
    assert leases.claim_next_job(other) is not None  # the owner went stale


def test_expired_lease_requeued_on_claim_in_same_conversation(alpha_agent, enqueue, worker):
    first = enqueue("c1", "alpha", "one")
    enqueue("c1", "alpha", "two")
    job = leases.claim_next_job(worker)
    with time_machine.travel(job.lease_expires_at, tick=False):
        again = leases.claim_next_job(worker)
    assert again.message.pk == first.pk and again.attempt == 2
    assert Message.objects.filter(status="processing").count() == 1
    with pytest.raises(leases.LeaseLost):
        leases.complete_job(worker, job.message.pk, job.lease_id)  # the old lease is fenced


def test_sweep_counts_attempt_and_dead_letters_crash_loop(alpha_agent, enqueue, worker):
    message = enqueue("c1", "alpha", max_attempts=3)
    for attempt in range(1, 4):
        job = leases.claim_next_job(worker)
        assert job.attempt == attempt
        with time_machine.travel(job.lease_expires_at + dt.timedelta(seconds=1), tick=False):
            report = leases.sweep_expired_leases()
    assert report == {"requeued": 0, "dead_lettered": 1}
    message.refresh_from_db()
    assert message.status == "dead_letter" and message.last_error == "lease expired"
    assert message.attempts == 3


def test_complete_after_sweep_is_lease_lost(alpha_agent, enqueue, worker):
    enqueue("c1", "alpha")
    job = leases.claim_next_job(worker)
    with time_machine.travel(job.lease_expires_at, tick=False):
        assert leases.sweep_expired_leases()["requeued"] == 1
    with pytest.raises(leases.LeaseLost):
        leases.complete_job(worker, job.message.pk, job.lease_id)
    assert Message.objects.get().status == "queued"


def test_heartbeat_one_second_late_is_lost(alpha_agent, enqueue, worker):
    enqueue("c1", "alpha")
    job = leases.claim_next_job(worker)
    late = job.lease_expires_at + dt.timedelta(seconds=1)
    with time_machine.travel(late, tick=False), pytest.raises(leases.LeaseLost):
        leases.heartbeat_job(worker, job.message.pk, job.lease_id)
    assert Message.objects.get().lease_expires_at == job.lease_expires_at


def test_release_stuck_jobs_command(alpha_agent, enqueue, worker):
    enqueue("c1", "alpha")
    job = leases.claim_next_job(worker)
    out = io.StringIO()
    with time_machine.travel(job.lease_expires_at, tick=False):
        call_command("release_stuck_jobs", "--json", stdout=out)
    assert json.loads(out.getvalue()) == {"requeued": 1, "dead_lettered": 0}


def test_requeue_dead_letters_resets_attempts(alpha_agent, enqueue, worker):
    from agents.models import AuditEvent

    message = enqueue("c1", "alpha")
    Message.objects.filter(pk=message.pk).update(status="dead_letter", attempts=5)
    assert leases.requeue_dead_letters([message.pk], actor="admin") == 1
    message.refresh_from_db()
    assert message.status == "queued" and message.attempts == 0
    assert AuditEvent.objects.filter(action="queue.requeue_dead_letters").exists()


def test_enqueue_validation(alpha_agent, db):
    from workers.queue import EnqueueError, enqueue_message

    base = {"provider": "telegram", "provider_user_id": "u", "message_text": "x"}
    with pytest.raises(EnqueueError, match="not found or disabled"):
        enqueue_message(conversation_id="c", agent_key="ghost", payload=base)
    with pytest.raises(EnqueueError, match="provider_user_id is required"):
        enqueue_message(
            conversation_id="c", agent_key="alpha", payload={**base, "provider_user_id": "  "}
        )
    enqueue_message(conversation_id="c", agent_key="alpha", payload=base)
    from agents.models import AgentProfile

    AgentProfile.objects.create(agent_key="other")
    with pytest.raises(EnqueueError, match="already bound to agent 'alpha'"):
        enqueue_message(conversation_id="c", agent_key="other", payload=base)
    assert Message.objects.count() == 1
    message = enqueue_message(
        conversation_id="c2", agent_key="alpha", payload=base, priority=500
    ).message
    assert message.priority == 100


def test_system_prompt_is_appended(alpha_agent, enqueue, runtime_config):
    runtime_config.system_prompt = "  Be brief.  "
    runtime_config.save()
    assert enqueue("c1", "alpha", "hello  ").payload["message_text"] == "hello\n\nBe brief."
