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
from workers.queue import requeue_dead_letters
from workers.sweep import sweep_expired_leases


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
            report = sweep_expired_leases()
    assert report == {"requeued": 0, "dead_lettered": 1}
    message.refresh_from_db()
    assert message.status == "dead_letter" and message.last_error == "lease expired"
    assert message.attempts == 3


def test_complete_after_sweep_is_lease_lost(alpha_agent, enqueue, worker):
    enqueue("c1", "alpha")
    job = leases.claim_next_job(worker)
    with time_machine.travel(job.lease_expires_at, tick=False):
        assert sweep_expired_leases()["requeued"] == 1
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
    assert requeue_dead_letters([message.pk], actor="admin") == 1
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


def test_system_prompt_stays_out_of_the_queued_text(alpha_agent, enqueue, runtime_config):
    runtime_config.system_prompt = "  Be brief.  "
    runtime_config.save()
    assert enqueue("c1", "alpha", "hello  ").payload["message_text"] == "hello  "


@pytest.mark.parametrize("action", ["heartbeat", "complete", "fail", "delivered"])
@pytest.mark.parametrize("offset", [0, 1])  # expiring exactly now, and one second late
def test_every_fenced_call_after_expiry_is_lost_and_changes_nothing(
    alpha_agent, enqueue, worker, action, offset
):
    enqueue("c1", "alpha")
    job = leases.claim_next_job(worker)
    before = Message.objects.get()
    worker_before = Worker.objects.get(pk=worker.pk)
    calls = {
        "heartbeat": lambda: leases.heartbeat_job(worker, job.message.pk, job.lease_id),
        "complete": lambda: leases.complete_job(worker, job.message.pk, job.lease_id),
        "fail": lambda: leases.fail_job(worker, job.message.pk, job.lease_id, "late"),
        "delivered": lambda: leases.mark_delivered(worker, job.message.pk, job.lease_id),
    }
    late = job.lease_expires_at + dt.timedelta(seconds=offset)
    with time_machine.travel(late, tick=False), pytest.raises(leases.LeaseLost):
        calls[action]()
    after = Message.objects.get()
    fields = ["status", "attempts", "lease_id", "lease_expires_at", "last_error", "delivered_at"]
    assert [getattr(after, f) for f in fields] == [getattr(before, f) for f in fields]
    worker_after = Worker.objects.get(pk=worker.pk)
    assert (worker_after.load, worker_after.scheduled_shutdown_at) == (
        worker_before.load,
        worker_before.scheduled_shutdown_at,
    )


def test_crash_loop_via_reclaim_dead_letters_and_the_conversation_moves_on(
    alpha_agent, enqueue, worker
):
    """A job that kills its worker every time: each reclaim after expiry counts an attempt;
    at max_attempts it is dead-lettered and the next message of the conversation is served."""
    poison = enqueue("c1", "alpha", "poison", max_attempts=3)
    following = enqueue("c1", "alpha", "next")
    job = leases.claim_next_job(worker)
    for attempt in (2, 3):
        with time_machine.travel(job.lease_expires_at, tick=False):
            Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now())
            job = leases.claim_next_job(worker)
        assert job.message.pk == poison.pk and job.attempt == attempt
    with time_machine.travel(job.lease_expires_at, tick=False):
        Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now())
        job = leases.claim_next_job(worker)
    assert job.message.pk == following.pk
    poison.refresh_from_db()
    assert poison.status == Message.DEAD_LETTER and poison.attempts == 3
    assert poison.last_error == "lease expired" and poison.dead_lettered_at is not None


def test_fail_backoff_grows_and_dead_letters_at_max(alpha_agent, enqueue, worker, runtime_config):
    message = enqueue("c1", "alpha", max_attempts=4)
    delays = []
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for attempt in range(1, 5):
            job = leases.claim_next_job(worker)
            assert job is not None and job.attempt == attempt
            failed = leases.fail_job(worker, job.message.pk, job.lease_id, f"boom {attempt}")
            if attempt == 4:
                break
            assert failed.status == Message.QUEUED
            delay = (failed.next_retry_at - timezone.now()).total_seconds()
            expected = runtime_config.retry_base_seconds * runtime_config.retry_factor ** (
                attempt - 1
            )
            assert expected <= delay <= expected * 1.1  # base·factor^(n-1) + ≤ 10 % jitter
            delays.append(delay)
            clock.move_to(failed.next_retry_at - dt.timedelta(milliseconds=1))
            assert leases.claim_next_job(worker) is None  # not before its retry time
            clock.move_to(failed.next_retry_at)
    assert failed.status == Message.DEAD_LETTER and failed.next_retry_at is None
    message.refresh_from_db()
    assert message.status == Message.DEAD_LETTER and message.attempts == 4
    assert message.last_error == "boom 4" and message.dead_lettered_at is not None
    assert len(delays) == 3 and delays == sorted(delays)


def test_sweep_keeps_a_live_workers_assignment_and_starts_its_idle_clock(
    alpha_agent, enqueue, worker, runtime_config
):
    enqueue("c1", "alpha")
    job = leases.claim_next_job(worker)
    moment = job.lease_expires_at
    with time_machine.travel(moment, tick=False):
        Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now())
        assert sweep_expired_leases() == {"requeued": 1, "dead_lettered": 0}
    worker.refresh_from_db()
    assert worker.assigned_conversation.conversation_id == "c1"  # requeued for this worker
    assert worker.load == 0 and worker.assigned_lease_id == ""
    assert worker.scheduled_shutdown_at == moment + dt.timedelta(
        seconds=runtime_config.idle_timeout_seconds
    )
    message = Message.objects.get()
    assert (message.status, message.attempts, message.claimed_by, message.lease_id) == (
        "queued",
        1,
        "",
        "",
    )


def test_sweep_recovers_processing_rows_with_missing_lease_data(alpha_agent, enqueue, worker):
    far = timezone.now() + dt.timedelta(hours=1)
    rows = [enqueue(f"c{n}", "alpha") for n in range(3)]
    Message.objects.filter(pk=rows[0].pk).update(
        status="processing", lease_id="", claimed_by="w1", lease_expires_at=far
    )
    Message.objects.filter(pk=rows[1].pk).update(
        status="processing", lease_id="l", claimed_by="", lease_expires_at=far
    )
    Message.objects.filter(pk=rows[2].pk).update(
        status="processing", lease_id="l", claimed_by="w1", lease_expires_at=None
    )
    assert sweep_expired_leases() == {"requeued": 3, "dead_lettered": 0}
    assert set(Message.objects.values_list("status", flat=True)) == {"queued"}
