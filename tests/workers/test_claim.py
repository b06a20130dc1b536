"""Claim rules (SPEC §6.2): whole-queue order, assignment, ownership, time boundaries."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from agents.models import Conversation
from workers import leases
from workers.models import Message, Worker
from workers.sweep import sweep_expired_leases


@pytest.fixture
def live(make_worker):
    def make(worker_id):
        return make_worker(worker_id, heartbeat_at=timezone.now())[0]

    return make


def test_backlog_of_busy_conversations_does_not_starve_a_free_one(alpha_agent, enqueue, live):
    # 300 conversations each busy (a live lease) with a high-priority message waiting: far
    # more than any fixed claim window. A free conversation's low-priority job is still found.
    for n in range(300):
        enqueue(f"busy-{n}", "alpha", priority=90)
        enqueue(f"busy-{n}", "alpha", priority=90)
    busy = Message.objects.filter(conversation__conversation_id__startswith="busy-")
    now = timezone.now()
    by_conv = {}
    for m in busy.order_by("id"):
        by_conv.setdefault(m.conversation_id, m.pk)
    Message.objects.filter(pk__in=by_conv.values()).update(
        status="processing",
        lease_id="x",
        claimed_by="ghost",
        lease_expires_at=now + dt.timedelta(minutes=5),
    )
    free = enqueue("free", "alpha", priority=0)
    job = leases.claim_next_job(live("w-free"))
    assert job is not None and job.message.pk == free.pk


def test_scheduled_job_is_not_claimable_before_its_time(alpha_agent, enqueue, live):
    later = timezone.now() + dt.timedelta(minutes=10)
    enqueue("conv-later", "alpha", scheduled_for=later)
    worker = live("w-sched")
    assert leases.claim_next_job(worker) is None
    with time_machine.travel(later):
        Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now())
        assert leases.claim_next_job(worker) is not None


def test_non_active_worker_claims_nothing(alpha_agent, enqueue, live):
    enqueue("conv-1", "alpha")
    for status in (Worker.DRAINING, Worker.STOPPING, Worker.STOPPED):
        worker = live(f"w-{status}")
        Worker.objects.filter(pk=worker.pk).update(status=status)
        assert leases.claim_next_job(worker) is None
    assert Message.objects.get().status == Message.QUEUED


def test_unassigned_worker_can_be_restricted_to_one_conversation(alpha_agent, enqueue, live):
    enqueue("conv-a", "alpha", priority=100)
    wanted = enqueue("conv-b", "alpha", priority=0)
    worker = live("w-restricted")
    assert leases.claim_next_job(worker, conversation_id="no-such-conversation") is None
    job = leases.claim_next_job(worker, conversation_id="conv-b")
    assert job.message.pk == wanted.pk
    worker.refresh_from_db()
    assert worker.assigned_conversation.conversation_id == "conv-b"
    assert worker.assigned_agent_key == "alpha"
    assert worker.load == 1 and worker.last_claim_at is not None


def test_claim_clears_a_scheduled_shutdown(alpha_agent, enqueue, live):
    enqueue("conv-1", "alpha")
    worker = live("w-idle")
    Worker.objects.filter(pk=worker.pk).update(scheduled_shutdown_at=timezone.now())
    leases.claim_next_job(worker)
    worker.refresh_from_db()
    assert worker.scheduled_shutdown_at is None


def test_conversation_of_a_stale_worker_can_be_taken_over(
    alpha_agent, enqueue, live, runtime_config
):
    enqueue("conv-1", "alpha")
    first = live("w-first")
    job = leases.claim_next_job(first)
    leases.complete_job(first, job.message.pk, job.lease_id)
    second_message = enqueue("conv-1", "alpha")
    other = live("w-other")
    assert leases.claim_next_job(other) is None  # the owner is live: its conversation
    stale = timezone.now() + dt.timedelta(seconds=runtime_config.stale_after_seconds + 1)
    with time_machine.travel(stale):
        Worker.objects.filter(pk=other.pk).update(heartbeat_at=timezone.now())
        job = leases.claim_next_job(other)
    assert job.message.pk == second_message.pk


def test_lease_expiring_exactly_now_is_dead(alpha_agent, enqueue, live):
    enqueue("conv-1", "alpha")
    worker = live("w-edge")
    job = leases.claim_next_job(worker)
    with time_machine.travel(job.lease_expires_at, tick=False):
        with pytest.raises(leases.LeaseLost):
            leases.heartbeat_job(worker, job.message.pk, job.lease_id)
        with pytest.raises(leases.LeaseLost):
            leases.complete_job(worker, job.message.pk, job.lease_id)
        assert sweep_expired_leases() == {"requeued": 1, "dead_lettered": 0}
    message = Message.objects.get()
    assert message.status == Message.QUEUED and message.attempts == 1


def test_lease_one_second_before_expiry_still_heartbeats(alpha_agent, enqueue, live):
    enqueue("conv-1", "alpha")
    worker = live("w-edge")
    job = leases.claim_next_job(worker)
    with time_machine.travel(job.lease_expires_at - dt.timedelta(seconds=1), tick=False):
        new_expiry = leases.heartbeat_job(worker, job.message.pk, job.lease_id)
        assert sweep_expired_leases() == {"requeued": 0, "dead_lettered": 0}
    assert new_expiry > job.lease_expires_at


def test_owner_reclaims_its_own_expired_job_first(alpha_agent, enqueue, live):
    first = enqueue("conv-1", "alpha")
    enqueue("conv-1", "alpha")
    worker = live("w-owner")
    job = leases.claim_next_job(worker)
    with time_machine.travel(job.lease_expires_at + dt.timedelta(seconds=1)):
        Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now())
        again = leases.claim_next_job(worker)
        assert Message.objects.filter(status="processing").count() == 1
    assert again.message.pk == first.pk and again.attempt == 2
    assert again.lease_id != job.lease_id


def test_sweep_then_another_worker_reclaims(alpha_agent, enqueue, live, runtime_config):
    first = enqueue("conv-1", "alpha")
    crashed = live("w-crashed")
    job = leases.claim_next_job(crashed)
    later = job.lease_expires_at + dt.timedelta(seconds=runtime_config.stale_after_seconds)
    with time_machine.travel(later):
        assert sweep_expired_leases()["requeued"] == 1
        crashed.refresh_from_db()
        assert crashed.assigned_conversation is None
        rescuer = live("w-rescuer")
        again = leases.claim_next_job(rescuer)
    assert again.message.pk == first.pk
    with pytest.raises(leases.LeaseLost):
        leases.complete_job(crashed, first.pk, job.lease_id)


def test_retry_delay_has_exponential_backoff_with_bounded_jitter(runtime_config):
    class Fixed:
        def __init__(self, value):
            self.value = value

        def random(self):
            return self.value

    base = runtime_config.retry_base_seconds
    factor = runtime_config.retry_factor
    assert leases.retry_delay_seconds(1, runtime_config, Fixed(0)) == base
    assert leases.retry_delay_seconds(3, runtime_config, Fixed(0)) == base * factor**2
    capped = leases.retry_delay_seconds(50, runtime_config, Fixed(0.999))
    assert runtime_config.retry_max_seconds <= capped <= runtime_config.retry_max_seconds * 1.1


@pytest.mark.postgres
def test_claim_queries_use_indexes(alpha_agent, enqueue):
    """The whole-queue candidate query and the per-conversation one are index scans."""
    enqueue("conv-1", "alpha")
    now = timezone.now()
    conversation = Conversation.objects.get()
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        try:
            whole = Message.objects.ready(now).in_claim_order()[:1].explain()
            mine = (
                Message.objects.ready(now)
                .filter(conversation=conversation)
                .in_claim_order()[:1]
                .explain()
            )
        finally:
            cursor.execute("SET enable_seqscan = on")
    assert "msg_ready_queue_idx" in whole, whole
    assert "Index" in mine and "Seq Scan" not in mine, mine


def test_heartbeats_keep_a_long_jobs_worker_live_under_a_short_stale_window(
    alpha_agent, enqueue, live, runtime_config
):
    runtime_config.stale_after_seconds = 20
    runtime_config.lease_seconds = 60
    runtime_config.save()
    from agents.models import _RUNTIME_CONFIG_CACHE

    _RUNTIME_CONFIG_CACHE.clear()
    enqueue("conv-1", "alpha")
    worker = live("w-long")
    job = leases.claim_next_job(worker)
    start = timezone.now()
    for step in range(1, 5):  # a heartbeat every 10 s for 40 s of work
        with time_machine.travel(start + dt.timedelta(seconds=10 * step)):
            worker.refresh_from_db()
            leases.heartbeat_job(worker, job.message.pk, job.lease_id)
            worker.refresh_from_db()
            age = (timezone.now() - worker.heartbeat_at).total_seconds()
            assert age < runtime_config.stale_after_seconds


def test_the_callers_worker_instance_reflects_the_claim(alpha_agent, enqueue, live):
    enqueue("conv-1", "alpha")
    worker = live("w-instance")
    job = leases.claim_next_job(worker)
    assert worker.assigned_conversation_id == job.message.conversation_id
    assert worker.assigned_lease_id == job.lease_id and worker.load == 1
