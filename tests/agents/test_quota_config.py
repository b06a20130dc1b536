"""The quota limits of SPEC §23 in the runtime config: configure_runtime and the admin."""

from __future__ import annotations

import json

import pytest

from agents.models import AuditEvent, RuntimeConfig
from tests.agents.test_admin_foundation import runtime_form
from tests.agents.test_commands import assert_refused

QUOTA_FLAGS = {
    "--user-rate-per-minute": ("user_rate_per_minute", 30),
    "--user-burst": ("user_burst", 4),
    "--conversation-queue-cap": ("conversation_queue_cap", 50),
    "--history-entries-per-job": ("history_entries_per_job", 128),
    "--history-bytes-per-job": ("history_bytes_per_job", 2 * 1024 * 1024),
    "--snapshot-prepares-per-minute": ("snapshot_prepares_per_minute", 2),
}


def test_configure_runtime_sets_every_quota(cli, db):
    args = [part for flag, (_, value) in QUOTA_FLAGS.items() for part in (flag, str(value))]
    result = cli("configure_runtime", *args, "--json")
    assert result.code == 0, result.err
    expected = dict(QUOTA_FLAGS.values())
    assert {key: json.loads(result.out)[key] for key in expected} == expected
    config = RuntimeConfig.get()
    assert {key: getattr(config, key) for key in expected} == expected
    event = AuditEvent.objects.get(action="runtime_config.update")
    assert event.details["changed"] == sorted(expected)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--user-rate-per-minute", "0"], "user_rate_per_minute: Ensure this value is greater"),
        (["--user-burst", "0"], "user_burst: Ensure this value is greater than or equal to 1"),
        (["--user-burst", "10001"], "user_burst: Ensure this value is less than or equal"),
        (["--conversation-queue-cap", "0"], "conversation_queue_cap: Ensure this value is"),
        (["--history-entries-per-job", "0"], "history_entries_per_job: Ensure this value is"),
        (["--history-bytes-per-job", "100"], "history_bytes_per_job: Ensure this value is"),
        (["--snapshot-prepares-per-minute", "0"], "snapshot_prepares_per_minute: Ensure"),
        (["--user-burst", "-3"], "argument --user-burst: must not be negative, got -3"),
        (["--conversation-queue-cap", "many"], "argument --conversation-queue-cap: expected"),
    ],
)
def test_configure_runtime_bad_quota_changes_nothing(cli, db_state, args, message):
    RuntimeConfig.get()
    before = db_state()
    result = cli("configure_runtime", "--user-burst", "3", *args)
    assert_refused(result, message)
    assert db_state() == before


def test_admin_changes_a_quota_and_audits_it(admin_client, runtime_config):
    url = "/admin/agents/runtimeconfig/1/change/"
    page = admin_client.get(url).content.decode()
    for field, _ in QUOTA_FLAGS.values():
        assert f'name="{field}"' in page
    response = admin_client.post(url, runtime_form(runtime_config, conversation_queue_cap=7))
    assert response.status_code == 302
    assert RuntimeConfig.objects.get().conversation_queue_cap == 7
    assert AuditEvent.objects.get().details == {"changed": ["conversation_queue_cap"]}


def test_admin_refuses_a_bad_quota(admin_client, runtime_config):
    url = "/admin/agents/runtimeconfig/1/change/"
    response = admin_client.post(url, runtime_form(runtime_config, user_rate_per_minute=0))
    assert response.status_code == 200 and b"errornote" in response.content
    assert RuntimeConfig.objects.get().user_rate_per_minute == 20
    assert not AuditEvent.objects.exists()
