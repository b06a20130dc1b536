"""Pushing in the admin: job forms validate the slot, trigger-now and broadcasts confirm
first, changelists cost the same queries for 1 or 20 rows."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.models import AuditEvent
from agents.pushing.models import PushBroadcast, PushBroadcastDispatch, PushDispatch, PushJob
from agents.pushing.services import send_broadcast

JOBS = "/admin/pushing/pushjob/"
SEND = "/admin/pushing/pushbroadcast/send/"


def job_form(**overrides):
    return {
        "target": "user",
        "consumer_user_id": "u1",
        "agent": "",
        "title": "Digest",
        "text": "Morning digest",
        "periodicity": "weekly",
        "timezone": "america/new_york",
        "time": "07:30",
        "weekday": "7",
        "day_of_month": "",
        "enabled": "on",
        **overrides,
    }


def test_a_job_added_in_the_admin_gets_its_next_run(admin_client, alpha_agent):
    response = admin_client.post(f"{JOBS}add/", job_form())
    assert response.status_code == 302, response.content[:2000]
    job = PushJob.objects.get()
    assert job.timezone == "America/New_York" and job.weekday == 7
    assert job.next_run_at.astimezone(job.next_run_at.tzinfo).isoweekday() in (7, 1)
    assert AuditEvent.objects.filter(action="push_job.add", target_id=str(job.pk)).exists()


def test_a_bad_slot_is_a_form_error_and_saves_nothing(admin_client, alpha_agent):
    for bad in ({"weekday": "9"}, {"time": "25:00"}, {"timezone": "Mars/Olympus"}):
        response = admin_client.post(f"{JOBS}add/", job_form(**bad))
        assert response.status_code == 200 and b"errornote" in response.content, bad
    response = admin_client.post(f"{JOBS}add/", job_form(target="agent_users"))
    assert b"needs the agent" in response.content
    assert not PushJob.objects.exists() and not AuditEvent.objects.exists()


def test_trigger_now_asks_first_then_sends(admin_client, alpha_agent, bind, make_job):
    for user in ("a1", "a2", "a3"):
        bind(user, alpha_agent)
    job = make_job("", target="agent_users", agent_key="alpha")
    body = {"action": "trigger_now", "_selected_action": [job.pk]}
    response = admin_client.post(JOBS, body)
    assert response.status_code == 200 and b"3</strong> user(s)" in response.content
    assert not PushDispatch.objects.exists()
    admin_client.post(JOBS, {**body, "confirm": "yes"})
    dispatch = PushDispatch.objects.get()
    assert dispatch.mode == "manual" and dispatch.broadcast.total_targets == 3
    assert PushBroadcastDispatch.objects.count() == 3


def test_a_broadcast_is_previewed_then_sent(admin_client, alpha_agent, beta_agent, bind):
    bind("a1", alpha_agent)
    bind("b1", beta_agent)
    bind("b2", beta_agent)
    preview = admin_client.post(SEND, {"text": "Hello", "agents": ["beta"]})
    assert b"<strong>2</strong> bound user(s)" in preview.content
    assert not PushBroadcast.objects.exists()
    sent = admin_client.post(SEND, {"text": "Hello", "agents": ["beta"], "confirm": "yes"})
    assert sent.status_code == 302
    broadcast = PushBroadcast.objects.get()
    assert broadcast.total_targets == 2 and broadcast.agent_keys == ["beta"]
    assert sorted(broadcast.targets.values_list("consumer_user_id", flat=True)) == ["b1", "b2"]


def test_a_broadcast_without_text_or_to_a_ghost_is_refused(admin_client, alpha_agent):
    response = admin_client.post(SEND, {"text": "  ", "confirm": "yes"})
    assert b"The text is required." in response.content
    response = admin_client.post(SEND, {"text": "Hi", "agents": ["ghost"]})
    assert b"Agent &#x27;ghost&#x27; does not exist." in response.content
    assert not PushBroadcast.objects.exists() and not AuditEvent.objects.exists()


def changelist_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_changelists_cost_the_same_for_1_or_20_rows(admin_client, alpha_agent, bind, make_job):
    urls = [JOBS, "/admin/pushing/pushdispatch/", "/admin/pushing/pushbroadcast/"]
    counts = []
    for size in (1, 20):
        for n in range(size):
            bind(f"u{size}-{n}", alpha_agent)
            job = make_job(f"u{size}-{n}")
            PushDispatch.objects.create(
                job=job, run_key=f"k{n}", scheduled_for=job.next_run_at, agent=alpha_agent
            )
            send_broadcast("hi", actor="t")
        counts.append([changelist_queries(admin_client, url) for url in urls])
    assert counts[0] == counts[1], counts
