"""Job edits, enabling, trigger-now, templates and per-user stats."""

from __future__ import annotations

import pytest

from agents.pushing.dispatch import dispatch_push_jobs
from agents.pushing.models import PushDispatch, PushJob
from agents.pushing.services import (
    PushError,
    push_stats,
    save_push_job,
    set_job_enabled,
    trigger_push_job,
)
from agents.pushing.template_services import save_push_template
from tests.pushing.conftest import utc
from workers.models import Message


def edit(job, now, **changes):
    fields = {
        "actor": "t",
        "text": job.text,
        "periodicity": job.periodicity,
        "timezone_name": job.timezone,
        "schedule": job.schedule,
        "consumer_user_id": job.consumer_user_id,
        **changes,
    }
    return save_push_job(job, now=utc(now), **fields)


def test_editing_the_text_keeps_a_due_slot(alpha_agent, bind, make_job):
    bind("u1", alpha_agent)
    job = make_job()
    edit(job, "2026-01-01T08:00:10Z", text="Good morning (fixed typo)")
    assert PushJob.objects.get().next_run_at == utc("2026-01-01T08:00Z")
    dispatch_push_jobs(utc("2026-01-01T08:00:30Z"))
    assert Message.objects.get().payload["message_text"] == "Good morning (fixed typo)"


def test_changing_the_schedule_moves_to_the_new_slot(alpha_agent, make_job):
    job = make_job()
    edit(job, "2026-01-01T08:00:10Z", schedule={"time": "09:00"})
    assert PushJob.objects.get().next_run_at == utc("2026-01-01T09:00Z")


def test_reenabling_does_not_replay_missed_slots(alpha_agent, make_job):
    job = make_job()
    set_job_enabled(job, False, actor="t", now=utc("2026-01-01T07:59:30Z"))
    assert PushJob.objects.get().next_run_at is None
    set_job_enabled(job, True, actor="t", now=utc("2026-01-03T12:00Z"))
    assert PushJob.objects.get().next_run_at == utc("2026-01-04T08:00Z")


def test_trigger_now_leaves_the_schedule_alone_and_works_when_disabled(alpha_agent, bind, make_job):
    bind("u1", alpha_agent)
    job = make_job(enabled=False)
    row = trigger_push_job(job, actor="t", now=utc("2026-01-01T08:10:42Z"))
    assert row.run_key == "manual:2026-01-01T08:10Z" and row.status == "pending"
    job.refresh_from_db()
    assert job.enabled is False and job.next_run_at is None
    enabled = make_job()
    trigger_push_job(enabled, actor="t", now=utc("2026-01-01T07:59:30Z"))
    enabled.refresh_from_db()
    assert enabled.next_run_at == utc("2026-01-01T08:00Z")  # the 08:00 slot still runs


def test_a_job_from_a_template_copies_its_text(alpha_agent, make_job):
    save_push_template(
        actor="t",
        key="digest",
        title="Digest",
        text="Here is your digest.",
        periodicity="daily",
        suggested_times=[{"time": "07:30"}],
    )
    job = make_job(text="", template_key="digest")
    assert job.text == "Here is your digest." and job.source_template.key == "digest"
    with pytest.raises(PushError, match="Push template 'nope' does not exist"):
        make_job(text="", template_key="nope")


@pytest.mark.parametrize(
    "periodicity, times, message",
    [
        ("manual", [{"time": "08:00"}], "takes no suggested times"),
        ("daily", [{"time": "08:00"}, {"time": "8:00"}], "Suggested time 2: Invalid time"),
        ("daily", [{"weekday": 1, "time": "08:00"}], "do not apply"),
        ("weekly", [{"weekday": 8, "time": "08:00"}], "weekday must be in range"),
    ],
)
def test_push_template_slots_are_validated(db, periodicity, times, message):
    with pytest.raises(PushError, match=message):
        save_push_template(
            actor="t", key="k", title="T", text="x", periodicity=periodicity, suggested_times=times
        )


def test_stats_per_user_agent(alpha_agent, beta_agent, bind, make_job):
    bind("u1", alpha_agent)
    make_job()
    make_job(enabled=False)
    dispatch_push_jobs(utc("2026-01-01T08:00:30Z"))
    stats = push_stats("u1", "alpha")
    assert stats["total_push_jobs"] == 2 and stats["active_push_jobs"] == 1
    assert stats["total_dispatches"] == 1 and stats["enqueued"] == 1
    assert stats["latest_dispatch_at"] == PushDispatch.objects.get().created_at
    assert push_stats("u1", "beta")["total_dispatches"] == 0


def test_failed_rows_can_be_retried_once_the_cause_is_fixed(alpha_agent, bind, make_job):
    from agents.models import AgentProfile
    from agents.pushing.dispatch import drain_pending
    from agents.pushing.models import PushBroadcastDispatch
    from agents.pushing.services import retry_failed

    make_job("later")  # not bound yet
    bind("a1", alpha_agent)
    make_job("", target="agent_users", agent_key="alpha")
    AgentProfile.objects.filter(pk=alpha_agent.pk).update(enabled=False)
    dispatch_push_jobs(utc("2026-01-01T08:00:30Z"))
    assert PushDispatch.objects.get(consumer_user_id="later").status == "failed"
    agent_wide = PushDispatch.objects.get(job__target="agent_users")
    assert agent_wide.status == "failed" and agent_wide.error == "Agent 'alpha' is disabled."
    assert not Message.objects.exists()
    # Both causes fixed: the user pairs, the agent is enabled again.
    bind("later", alpha_agent)
    AgentProfile.objects.filter(pk=alpha_agent.pk).update(enabled=True)
    assert retry_failed(PushDispatch.objects.all(), actor="t") == {
        "retried": 1,
        "still_failed": 1,  # the agent-wide run: trigger the job instead
    }
    assert retry_failed(PushBroadcastDispatch.objects.all(), actor="t")["retried"] == 0
    drain_pending()
    assert PushDispatch.objects.get(consumer_user_id="later").status == "enqueued"
    assert Message.objects.count() == 1
    assert retry_failed(PushDispatch.objects.all(), actor="t")["retried"] == 0  # nothing left
    assert PushDispatch.objects.get(pk=agent_wide.pk).status == "failed"


def test_a_failed_broadcast_target_is_retried_with_its_target(alpha_agent, bind):
    from agents.models import AgentProfile
    from agents.pushing.dispatch import drain_pending
    from agents.pushing.models import PushBroadcastDispatch
    from agents.pushing.services import retry_failed, send_broadcast

    bind("a1", alpha_agent)
    send_broadcast("News", actor="t", agent_keys=["alpha"])
    AgentProfile.objects.filter(pk=alpha_agent.pk).update(enabled=False)
    drain_pending()
    row = PushBroadcastDispatch.objects.get()
    assert row.status == "failed" and "not found or disabled" in row.error
    AgentProfile.objects.filter(pk=alpha_agent.pk).update(enabled=True)
    assert retry_failed(PushBroadcastDispatch.objects.all(), actor="t")["retried"] == 1
    drain_pending()
    row.refresh_from_db()
    assert row.status == "enqueued" and row.error == "" and Message.objects.count() == 1
