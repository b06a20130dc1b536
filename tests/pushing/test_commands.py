"""The pushing commands: --json output, and bad input ending in one clear error with
nothing changed (SPEC §17, §19)."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from agents.models import AuditEvent
from agents.pushing.models import MessageTemplate, PushBroadcast, PushDispatch, PushJob
from workers.models import Message


def run(*args) -> dict:
    out = StringIO()
    call_command(*args, "--json", stdout=out)
    return json.loads(out.getvalue())


def nothing_written():
    return (
        not PushJob.objects.exists()
        and not PushBroadcast.objects.exists()
        and not Message.objects.exists()
        and not AuditEvent.objects.exists()
    )


def test_create_and_list_a_weekly_job(alpha_agent):
    job = run(
        "create_push_job",
        "--user",
        "u1",
        "--text",
        "Weekly digest",
        "--periodicity",
        "weekly",
        "--weekday",
        "7",
        "--time",
        "09:00",
        "--timezone",
        "europe/rome",
    )
    assert job["timezone"] == "Europe/Rome" and job["schedule"] == {"weekday": 7, "time": "09:00"}
    next_run = dt.datetime.fromisoformat(job["next_run_at"].replace("Z", "+00:00"))
    local = next_run.astimezone(dt.timezone(dt.timedelta(hours=1)))  # CET or CEST
    assert next_run > timezone.now() and local.isoweekday() == 7
    listed = run("list_push_jobs", "--user", "u1")["results"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert AuditEvent.objects.filter(action="push_job.add").count() == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--periodicity", "weekly", "--time", "09:00", "--weekday", "9"], "weekday must be in"),
        (["--periodicity", "weekly", "--time", "09:00", "--weekday", "x"], "whole number"),
        (["--periodicity", "daily", "--time", "9:00"], "Invalid time '9:00'"),
        (["--periodicity", "daily", "--time", "09:00", "--timezone", "Mars/Olympus"], "Mars"),
        (["--periodicity", "monthly", "--time", "09:00", "--day", "32"], "1..31 or 'last'"),
        (["--periodicity", "daily"], "needs schedule.time"),
    ],
)
def test_bad_schedules_change_nothing(alpha_agent, extra, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_push_job", "--user", "u1", "--text", "x", *extra)
    assert nothing_written()


def test_an_empty_text_or_unknown_agent_is_refused(alpha_agent):
    with pytest.raises(CommandError, match="text is required"):
        call_command("create_push_job", "--user", "u1", "--periodicity", "manual")
    with pytest.raises(CommandError, match="Agent 'ghost' does not exist"):
        call_command(
            "create_push_job", "--agent-users", "ghost", "--text", "x", "--periodicity", "manual"
        )
    assert nothing_written()


def test_trigger_now_sends_once_per_minute(alpha_agent, bind):
    bind("u1", alpha_agent)
    job = run("create_push_job", "--user", "u1", "--text", "Now!", "--periodicity", "manual")
    first = run("trigger_push_job", str(job["id"]))
    assert first["status"] == "enqueued" and first["run_key"].startswith("manual:")
    assert Message.objects.get().payload["message_text"] == "Now!"
    with pytest.raises(CommandError, match="already triggered"):
        call_command("trigger_push_job", str(job["id"]))
    assert Message.objects.count() == 1 and PushDispatch.objects.count() == 1
    with pytest.raises(CommandError, match="#999 does not exist"):
        call_command("trigger_push_job", "999")


def test_trigger_without_a_binding_says_why_and_records_nothing(alpha_agent):
    job = run("create_push_job", "--user", "lonely", "--text", "x", "--periodicity", "manual")
    with pytest.raises(CommandError, match="No active agent binding for consumer user 'lonely'"):
        call_command("trigger_push_job", str(job["id"]))
    assert not PushDispatch.objects.exists() and not Message.objects.exists()


def test_send_broadcast_is_a_dry_run_until_applied(alpha_agent, beta_agent, bind):
    for user in ("a1", "a2"):
        bind(user, alpha_agent)
    bind("b1", beta_agent)
    preview = run("send_broadcast", "--text", "Policy update")
    assert preview == {"targets": 3, "by_agent": {"alpha": 2, "beta": 1}, "applied": False}
    assert nothing_written()
    sent = run("send_broadcast", "--text", "Policy update", "--agent", "alpha", "--apply")
    assert sent["targets"] == 2 and sent["enqueued"] == 2
    assert Message.objects.count() == 2
    assert AuditEvent.objects.get(action="push_broadcast.send").details == {"targets": 2}


def test_send_broadcast_refuses_unknown_or_disabled_agents(alpha_agent, bind):
    bind("a1", alpha_agent)
    with pytest.raises(CommandError, match="Agent 'ghost' does not exist"):
        call_command("send_broadcast", "--text", "x", "--agent", "ghost", "--apply")
    alpha_agent.enabled = False
    alpha_agent.save()
    with pytest.raises(CommandError, match="Agent 'alpha' is disabled"):
        call_command("send_broadcast", "--text", "x", "--agent", "alpha", "--apply")
    with pytest.raises(CommandError, match="text is required"):
        call_command("send_broadcast", "--text", "  ", "--apply")
    assert nothing_written()


def test_dispatch_push_jobs_reports_as_json(alpha_agent, bind):
    bind("u1", alpha_agent)
    job = run(
        "create_push_job",
        "--user",
        "u1",
        "--text",
        "x",
        "--periodicity",
        "daily",
        "--time",
        "08:00",
    )
    PushJob.objects.filter(pk=job["id"]).update(
        next_run_at=timezone.now() - dt.timedelta(minutes=1)
    )
    report = run("dispatch_push_jobs")
    assert report["claimed"] == 1 and report["enqueued"] == 1
    assert run("dispatch_push_jobs")["scanned"] == 0


def test_message_templates_count_their_uses(alpha_agent, bind):
    bind("u1", alpha_agent)
    made = run(
        "message_templates",
        "create",
        "--title",
        " Status Update ",
        "--text",
        "Share!",
        "--tag",
        " Urgent ",
        "--tag",
        "urgent",
        "--tag",
        "team",
    )
    assert made["slug"] == "status-update" and made["tags"] == ["team", "urgent"]
    again = run("message_templates", "create", "--title", "Status update", "--text", "Again")
    assert again["slug"] == "status-update-2"
    for _ in range(2):
        run("message_templates", "send", "status-update", "--user", "u1")
    run("message_templates", "send", "status-update-2", "--user", "u1")
    listed = run("message_templates", "list")["results"]
    assert [(t["slug"], t["usage_count"]) for t in listed] == [
        ("status-update", 2),
        ("status-update-2", 1),
    ]
    MessageTemplate.objects.filter(slug="status-update").update(enabled=False)
    with pytest.raises(CommandError, match="not found or disabled"):
        call_command("message_templates", "send", "status-update", "--user", "u1")
    with pytest.raises(CommandError, match="No active agent binding"):
        call_command("message_templates", "send", "status-update-2", "--user", "nobody")
    assert MessageTemplate.objects.get(slug="status-update-2").usage_count == 1
    assert Message.objects.count() == 3
