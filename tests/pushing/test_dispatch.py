"""The dispatcher: each slot once (a DB constraint), failures recorded with their reason,
catch-up of at most the latest slot, fan-out to bound users, a fixed number of queries."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.models import AgentProfile, RuntimeConfig
from agents.pushing.dispatch import claim_due_runs, dispatch_push_jobs, drain_pending
from agents.pushing.models import PushBroadcastDispatch, PushDispatch, PushJob
from tests.pushing.conftest import utc
from workers.models import Message


def test_a_due_job_is_enqueued_for_the_agent_once(alpha_agent, bind, make_job):
    binding = bind("u1", alpha_agent)
    job = make_job()
    assert job.next_run_at == utc("2026-01-01T08:00Z")
    report = dispatch_push_jobs(utc("2026-01-01T08:00:30Z"))
    assert report["claimed"] == 1 and report["enqueued"] == 1
    message = Message.objects.get()
    assert message.conversation.conversation_id == "user-agent:alpha:u1"
    assert message.agent_key == "alpha" and message.payload["message_text"] == "Good morning"
    assert message.payload["provider"] == "telegram"
    meta = message.payload["metadata"]
    assert meta["telegram_chat_id"] == binding.telegram_chat_id
    assert meta["push_job_id"] == str(job.pk) and meta["run_key"] == "scheduled:2026-01-01T08:00Z"
    dispatch = PushDispatch.objects.get()
    assert dispatch.status == "enqueued" and dispatch.message_id == message.pk
    assert dispatch.scheduled_for == utc("2026-01-01T08:00Z")
    job.refresh_from_db()
    assert job.next_run_at == utc("2026-01-02T08:00Z")
    assert job.last_run_key == "scheduled:2026-01-01T08:00Z"
    # The next minute: nothing is due.
    assert dispatch_push_jobs(utc("2026-01-01T08:01Z"))["scanned"] == 0
    assert Message.objects.count() == 1


def test_a_slot_already_dispatched_is_skipped(alpha_agent, bind, make_job):
    bind("u1", alpha_agent)
    job = make_job()
    dispatch_push_jobs(utc("2026-01-01T08:00:30Z"))
    # An edit (or a restored backup) puts the job back on a slot that was already sent.
    PushJob.objects.filter(pk=job.pk).update(next_run_at=utc("2026-01-01T08:00Z"))
    report = dispatch_push_jobs(utc("2026-01-01T08:05Z"))
    assert report["skipped"] == 1 and report["claimed"] == 0
    assert Message.objects.count() == 1 and PushDispatch.objects.count() == 1
    job.refresh_from_db()
    assert job.next_run_at == utc("2026-01-02T08:00Z")


def test_the_constraint_refuses_a_second_row_for_the_same_slot(alpha_agent, bind, make_job):
    from django.db import IntegrityError, transaction

    job = make_job()
    PushDispatch.objects.create(job=job, run_key="scheduled:x", scheduled_for=job.next_run_at)
    with pytest.raises(IntegrityError), transaction.atomic():
        PushDispatch.objects.create(job=job, run_key="scheduled:x", scheduled_for=job.next_run_at)


def test_no_binding_fails_with_the_reason_and_moves_on(alpha_agent, make_job):
    job = make_job("nobody")
    report = dispatch_push_jobs(utc("2026-01-01T08:00:30Z"))
    assert report["failed"] == 1 and not Message.objects.exists()
    dispatch = PushDispatch.objects.get()
    assert dispatch.status == "failed"
    assert dispatch.error == "No active agent binding for consumer user 'nobody'."
    job.refresh_from_db()
    assert job.next_run_at == utc("2026-01-02T08:00Z")


def test_a_disabled_agent_fails_the_dispatch_with_the_queue_reason(alpha_agent, bind, make_job):
    bind("u1", alpha_agent)
    make_job()
    AgentProfile.objects.filter(pk=alpha_agent.pk).update(enabled=False)
    report = dispatch_push_jobs(utc("2026-01-01T08:00:30Z"))
    assert report["enqueue_failed"] == 1 and not Message.objects.exists()
    assert PushDispatch.objects.get().error == "Agent profile 'alpha' not found or disabled"


def test_the_job_follows_the_user_to_their_new_agent(alpha_agent, beta_agent, bind, make_job):
    old = bind("u1", alpha_agent)
    make_job(agent_key="alpha")
    old.status = "revoked"
    old.save()
    bind("u1", beta_agent)
    dispatch_push_jobs(utc("2026-01-01T08:00:30Z"))
    assert Message.objects.get().conversation.conversation_id == "user-agent:beta:u1"


def test_a_dispatcher_that_was_down_sends_the_latest_slot_once(alpha_agent, bind, make_job):
    bind("u1", alpha_agent)
    job = make_job()
    report = dispatch_push_jobs(utc("2026-01-04T09:00Z"))
    assert report["claimed"] == 1 and Message.objects.count() == 1
    dispatch = PushDispatch.objects.get()
    assert dispatch.scheduled_for == utc("2026-01-04T08:00Z") and dispatch.missed_slots == 3
    job.refresh_from_db()
    assert job.next_run_at == utc("2026-01-05T08:00Z")


def test_manual_and_disabled_jobs_are_never_picked(alpha_agent, bind, make_job):
    bind("u1", alpha_agent)
    for _ in range(3):
        make_job(periodicity="manual", schedule={})
    make_job(enabled=False)
    due = make_job()
    report = claim_due_runs(utc("2026-01-01T08:00:30Z"), limit=1)
    assert report["scanned"] == 1 and PushDispatch.objects.get().job == due


def test_the_oldest_slots_go_first_when_over_the_limit(alpha_agent, bind, make_job):
    bind("u1", alpha_agent)
    late, early = make_job(time="08:00"), make_job(time="07:59", now="2026-01-01T07:58Z")
    claim_due_runs(utc("2026-01-01T08:00:30Z"), limit=1)
    assert PushDispatch.objects.get().job == early
    claim_due_runs(utc("2026-01-01T08:00:40Z"), limit=1)
    assert PushDispatch.objects.filter(job=late).exists()


def test_an_agent_job_reaches_every_bound_user_of_that_agent(
    alpha_agent, beta_agent, bind, make_job
):
    for user in ("a1", "a2", "a3"):
        bind(user, alpha_agent)
    bind("gone", alpha_agent, status="revoked")
    bind("b1", beta_agent)
    job = make_job("", target="agent_users", agent_key="alpha")
    report = dispatch_push_jobs(utc("2026-01-01T08:00:30Z"))
    assert report["broadcast_targets"] == 3 and report["enqueued"] == 3
    dispatch = PushDispatch.objects.get(job=job)
    assert dispatch.status == "broadcast" and dispatch.broadcast.total_targets == 3
    conversations = sorted(Message.objects.values_list("conversation__conversation_id", flat=True))
    assert conversations == [f"user-agent:alpha:a{i}" for i in (1, 2, 3)]
    assert set(PushBroadcastDispatch.objects.values_list("status", flat=True)) == {"enqueued"}


def test_rows_left_pending_by_a_crash_are_enqueued_by_the_next_run(alpha_agent, bind, make_job):
    bind("u1", alpha_agent)
    make_job()
    claim_due_runs(utc("2026-01-01T08:00:30Z"))  # the process dies before the drain
    assert PushDispatch.objects.get().status == "pending" and not Message.objects.exists()
    assert dispatch_push_jobs(utc("2026-01-01T08:01Z"))["enqueued"] == 1
    assert drain_pending() == {"enqueued": 0, "enqueue_failed": 0}
    assert Message.objects.count() == 1


def claim_queries(now) -> int:
    with CaptureQueriesContext(connection) as captured:
        claim_due_runs(now)
    return len(captured)


@pytest.mark.parametrize("target", ["user", "agent_users"])
def test_the_claim_costs_the_same_queries_for_1_or_50(alpha_agent, bind, make_job, target):
    counts = []
    for size, day in ((1, "01"), (50, "02")):
        PushJob.objects.all().delete()
        for n in range(size):
            user = f"u{day}-{n}"
            bind(user, alpha_agent)
            if target == "user":
                make_job(user, now=f"2026-01-{day}T07:59Z")
        if target == "agent_users":
            make_job("", target="agent_users", agent_key="alpha", now=f"2026-01-{day}T07:59Z")
        counts.append(claim_queries(utc(f"2026-01-{day}T08:00:30Z")))
    assert counts[0] == counts[1], counts
    if target == "user":
        assert PushDispatch.objects.filter(status="pending").count() == 50  # day 2 only
    else:
        assert PushBroadcastDispatch.objects.count() == 1 + 51  # day 2 sees day 1's users too


def test_the_drain_costs_a_fixed_number_of_queries_per_message(
    runtime_config, alpha_agent, bind, make_job
):
    """The one door into the queue takes one row at a time: the cost grows by the same
    few queries per message (savepoint, conversation lookup or creation, insert)."""
    costs = []
    for size, day in ((1, "01"), (50, "02")):
        PushJob.objects.all().delete()
        for n in range(size):
            bind(f"u{day}-{n}", alpha_agent)
            make_job(f"u{day}-{n}", now=f"2026-01-{day}T07:59Z")
        claim_due_runs(utc(f"2026-01-{day}T08:00:30Z"))
        RuntimeConfig.get_cached()  # the queue's cached config: warm in both rounds
        with CaptureQueriesContext(connection) as captured:
            drain_pending()
        costs.append(len(captured))
    per_message = (costs[1] - costs[0]) / 49
    assert per_message == int(per_message) and per_message <= 4, costs


def test_a_conversation_owned_by_another_agent_fails_that_target_only(
    alpha_agent, beta_agent, bind, make_job
):
    from agents.models import Conversation

    Conversation.objects.create(conversation_id="user-agent:alpha:a1", agent=beta_agent)
    for user in ("a1", "a2"):
        bind(user, alpha_agent)
    make_job("", target="agent_users", agent_key="alpha")
    report = dispatch_push_jobs(utc("2026-01-01T08:00:30Z"))
    assert report["enqueued"] == 1 and report["enqueue_failed"] == 1
    failed = PushBroadcastDispatch.objects.get(status="failed")
    assert failed.consumer_user_id == "a1"
    assert "already bound to agent 'beta', cannot enqueue for 'alpha'" in failed.error
    assert Message.objects.get().conversation.conversation_id == "user-agent:alpha:a2"


def test_a_push_to_a_paused_agent_is_skipped_for_budget(alpha_agent, bind, make_job):
    from decimal import Decimal

    from django.utils import timezone

    from agents import budget

    bind("u1", alpha_agent)
    make_job()
    AgentProfile.objects.filter(pk=alpha_agent.pk).update(monthly_budget_usd=Decimal("1"))
    budget.add_spend("alpha", Decimal("1"), timezone.now())
    report = dispatch_push_jobs(utc("2026-01-01T08:00:30Z"))
    assert report["enqueued"] == 0 and not Message.objects.exists()
    dispatch = PushDispatch.objects.get()
    assert dispatch.status == "skipped" and dispatch.error.startswith("budget: Agent 'alpha'")
