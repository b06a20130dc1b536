"""Dispatchers racing on real concurrent PostgreSQL connections: every slot is enqueued
once (row locks with SKIP LOCKED, and the (job, run key) constraint behind them)."""

from __future__ import annotations

import pytest

from agents.pushing.dispatch import dispatch_push_jobs
from agents.pushing.models import PushBroadcastDispatch, PushDispatch, PushJob
from tests.pushing.conftest import utc
from tests.race import run_at_once
from workers.models import Message

RACERS = 4


def race(now, rounds: int = 1) -> list[dict]:
    def run():
        return [dispatch_push_jobs(now) for _ in range(rounds)]

    batches = run_at_once(run, [()] * RACERS, barrier_timeout=10)
    return [report for batch in batches for report in batch]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_dispatchers_enqueue_each_slot_once(alpha_agent, bind, make_job):
    for n in range(20):
        bind(f"u{n}", alpha_agent)
        make_job(f"u{n}")
    for n in range(30):
        bind(f"fan{n}", alpha_agent, chat=None)
    make_job("", target="agent_users", agent_key="alpha")
    reports = race(utc("2026-01-01T08:00:30Z"), rounds=2)
    assert sum(r["claimed"] for r in reports) == 21
    # 20 users with their own job + 50 bound users reached by the agent-wide job.
    assert Message.objects.count() == 20 + 50
    assert sum(r["enqueued"] for r in reports) == 70
    assert PushDispatch.objects.count() == 21
    assert PushBroadcastDispatch.objects.filter(status="enqueued").count() == 50
    pairs = Message.objects.values_list("conversation__conversation_id", flat=True)
    assert len(set(pairs)) == 50  # the 20 own-job users also got the agent-wide push


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_slot_put_back_by_an_edit_is_still_sent_once_under_a_race(alpha_agent, bind, make_job):
    bind("u1", alpha_agent)
    job = make_job()
    dispatch_push_jobs(utc("2026-01-01T08:00:30Z"))
    PushJob.objects.filter(pk=job.pk).update(next_run_at=utc("2026-01-01T08:00Z"))
    reports = race(utc("2026-01-01T08:02Z"))
    assert sum(r["skipped"] for r in reports) == 1 and sum(r["claimed"] for r in reports) == 0
    assert Message.objects.count() == 1 and PushDispatch.objects.count() == 1
