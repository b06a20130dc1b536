"""The fair-share and handoff timers are runtime config (SPEC §6.2): defaults, the
command's flags, validation that changes nothing, and the admin form."""

from __future__ import annotations

import json

import pytest

from agents.models import AuditEvent, RuntimeConfig
from tests.agents.test_commands import assert_refused


def test_defaults(db):
    config = RuntimeConfig.get()
    assert (config.reassign_after_seconds, config.handoff_timeout_seconds) == (30, 120)


def test_configure_runtime_sets_both_timers(cli, db):
    result = cli(
        "configure_runtime",
        "--reassign-after-seconds",
        "5",
        "--handoff-timeout-seconds",
        "45",
        "--json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["reassign_after_seconds"], data["handoff_timeout_seconds"]) == (5, 45)
    config = RuntimeConfig.get()
    assert (config.reassign_after_seconds, config.handoff_timeout_seconds) == (5, 45)
    event = AuditEvent.objects.get(action="runtime_config.update")
    assert event.details["changed"] == ["handoff_timeout_seconds", "reassign_after_seconds"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--reassign-after-seconds", "0"], "reassign_after_seconds: Ensure this value is greater"),
        (
            ["--reassign-after-seconds", "86401"],
            "reassign_after_seconds: Ensure this value is less",
        ),
        (
            ["--handoff-timeout-seconds", "0"],
            "handoff_timeout_seconds: Ensure this value is greater",
        ),
        (
            ["--handoff-timeout-seconds", "3601"],
            "handoff_timeout_seconds: Ensure this value is less",
        ),
        (["--handoff-timeout-seconds", "-1"], "must not be negative, got -1"),
    ],
)
def test_bad_timers_change_nothing(cli, db_state, args, message):
    RuntimeConfig.get()
    before = db_state()
    result = cli("configure_runtime", "--max-workers", "9", *args)
    assert_refused(result, message)
    assert db_state() == before


def test_admin_form_has_both_timers(admin_client, db):
    RuntimeConfig.get()
    page = admin_client.get("/admin/agents/runtimeconfig/1/change/").content.decode()
    assert 'name="reassign_after_seconds"' in page and 'name="handoff_timeout_seconds"' in page


def test_conversation_admin_shows_the_handoff_read_only(admin_client, alpha_agent):
    from agents.models import Conversation

    conversation = Conversation.objects.create(
        conversation_id="c-h", agent=alpha_agent, handoff_from_worker="w-1"
    )
    page = admin_client.get(f"/admin/agents/conversation/{conversation.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "w-1" in html and 'name="handoff_from_worker"' not in html
