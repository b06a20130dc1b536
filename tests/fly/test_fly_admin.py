"""The Fly cleanup admin: a dry-run preview that is also the confirmation page, then the
confirmed run (audited), against the strict `responses` mock."""

from __future__ import annotations

from django.urls import reverse

from agents.models import AuditEvent, RuntimeConfig
from tests.fly.conftest import APP, A, cleanup_mocks, cleanup_sequence

RUN = "admin:fly_cleanup_run"


def test_preview_is_a_dry_run_and_asks_for_confirmation(admin_client, fly_config, fly):
    fly.expect("GET", A, json={"name": APP})
    fly.expect("GET", f"{A}/machines", json=[{"id": "m_1"}, {"id": "m_2"}])
    fly.expect("GET", f"{A}/volumes", json=[{"id": "vol_1"}])
    response = admin_client.get(reverse(RUN))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Dry run" in html and "m_1, m_2" in html and "vol_1" in html
    assert 'name="confirm" value="yes"' in html and f'name="app" value="{APP}"' in html
    assert fly.calls == [
        f"GET /apps/{APP}",
        f"GET /apps/{APP}/machines",
        f"GET /apps/{APP}/volumes",
    ]
    assert not AuditEvent.objects.filter(action="fly.cleanup").exists()


def test_confirmed_run_destroys_and_audits(admin_client, fly_config, fly):
    cleanup_mocks(fly, failing_machine="m_1", machines_left=["m_1"])
    response = admin_client.post(reverse(RUN), {"app": APP, "confirm": "yes"}, follow=True)
    assert fly.calls == cleanup_sequence()
    html = response.content.decode()
    assert f"Cleanup of {APP}: 1 machine(s), 2 volume(s) destroyed; 1 error(s)." in html
    audit = AuditEvent.objects.get(action="fly.cleanup")
    assert audit.actor == "admin" and audit.details["machine_ids_remaining"] == ["m_1"]
    # The run is listed in the cleanup history with its summary.
    listing = admin_client.get(reverse("admin:fly_flycleanuprun_changelist")).content.decode()
    assert "machines 1/2 deleted, volumes 2/2 deleted, 1 error(s)" in listing


def test_a_post_without_confirmation_only_previews(admin_client, fly_config, fly):
    fly.expect("GET", A, json={"name": APP})
    fly.expect("GET", f"{A}/machines", json=[])
    fly.expect("GET", f"{A}/volumes", json=[])
    response = admin_client.post(reverse(RUN), {"app": APP})
    assert b"Dry run" in response.content
    assert all(call.startswith("GET") for call in fly.calls)


def test_bad_configuration_is_a_message_not_a_traceback(admin_client, db, fly):
    RuntimeConfig.get()
    RuntimeConfig.objects.filter(pk=1).update(provider_kind="fly", app_name="")
    response = admin_client.get(reverse(RUN), follow=True)
    assert response.status_code == 200
    assert b"Fly cleanup requires a non-empty Fly app name" in response.content
    assert fly.calls == []
