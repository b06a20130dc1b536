"""Fly client, provider and cleanup against `responses`: the exact sequence of API calls.

Every test uses a strict mock: responses must be called in the order registered
(OrderedRegistry), each call is matched on method, path, query string, JSON body (or no body)
and the bearer token; a registered call that never happens fails
(assert_all_requests_are_fired), and an unexpected call fails the test even where the code
under test tolerates errors (the fixture checks that every recorded call was matched).
"""

from __future__ import annotations

import io
import json

import pytest
import requests
from django.core.management import CommandError, call_command

from agents.models import AuditEvent, RuntimeConfig
from fly.cleanup import run_fly_cleanup, run_scheduled_cleanup
from fly.client import TIMEOUT, FlyApiError, FlyClient
from fly.provider import FlyProvider, volume_name
from tests.fly.conftest import (
    APP,
    BASE,
    TOKEN,
    A,
    cleanup_mocks,
    cleanup_sequence,
    fly_worker,
    machine_body,
    volume_body,
)
from workers.models import Worker
from workers.providers.base import ProviderError, SpawnFailed, SpawnRequest


def no_sleep(_):
    return None


def client():
    return FlyClient(TOKEN, sleep=no_sleep)


def request(worker_id="w-1"):
    return SpawnRequest(
        worker_id=worker_id,
        token="wk_tok",
        api_url="https://factory.test",
        conversation_id="conv-1",
        agent_key="alpha",
    )


# Spawn ---------------------------------------------------------------------------------


def test_spawn_creates_volume_then_machine(fly_config, fly):
    fly.expect("POST", f"{A}/volumes", body=volume_body(), json={"id": "vol_1"})
    fly.expect("POST", f"{A}/machines", body=machine_body(), json={"id": "m_1", "region": "ams"})
    result = FlyProvider(client()).spawn(request())
    assert (result.machine_id, result.volume_id, result.region) == ("m_1", "vol_1", "ams")
    assert result.machine_app == APP
    assert fly.calls == [f"POST /apps/{APP}/volumes", f"POST /apps/{APP}/machines"]
    assert len(volume_name("agent_data", "w-1")) <= 30


def test_spawn_forwards_bridge_secrets(fly_config, fly, alpha_agent):
    from agents.secret_store import import_secret

    alpha_agent.bridge_config = {"enabled": True, "base_url": "https://app", "service_id": "svc"}
    alpha_agent.save()
    import_secret("agent-bridge.serviceKey", "svc-key", actor="t")
    import_secret("agent-bridge.linkingSharedSecret", "link-secret", actor="t")
    expected = machine_body()
    expected["config"]["env"].update(
        OPENCLAW_SERVICE_ID="svc",
        OPENCLAW_SERVICE_KEY="svc-key",
        OPENCLAW_LINKING_SHARED_SECRET="link-secret",
    )
    fly.expect("POST", f"{A}/volumes", body=volume_body(), json={"id": "vol_1"})
    fly.expect("POST", f"{A}/machines", body=expected, json={"id": "m_1"})
    FlyProvider(client()).spawn(request())
    assert fly.calls == [f"POST /apps/{APP}/volumes", f"POST /apps/{APP}/machines"]


def test_spawn_failure_deletes_the_new_volume(fly_config, fly):
    fly.expect("POST", f"{A}/volumes", body=volume_body(), json={"id": "vol_1"})
    fly.expect(
        "POST", f"{A}/machines", body=machine_body(), status=422, json={"error": "invalid image"}
    )
    fly.expect("DELETE", f"{A}/volumes/vol_1")
    with pytest.raises(ProviderError) as exc:
        FlyProvider(client()).spawn(request())
    assert not isinstance(exc.value, SpawnFailed)  # nothing left behind
    assert "422" in str(exc.value) and "invalid image" in str(exc.value)
    assert TOKEN not in str(exc.value)
    assert fly.calls == [
        f"POST /apps/{APP}/volumes",
        f"POST /apps/{APP}/machines",
        f"DELETE /apps/{APP}/volumes/vol_1",
    ]


def test_spawn_failure_that_cannot_delete_the_volume_reports_the_leftover(fly_config, fly):
    fly.expect("POST", f"{A}/volumes", body=volume_body(), json={"id": "vol_1"})
    fly.expect("POST", f"{A}/machines", body=machine_body(), status=422, json={"error": "bad"})
    fly.expect("DELETE", f"{A}/volumes/vol_1", status=403, json={"error": "forbidden"})
    with pytest.raises(SpawnFailed) as exc:
        FlyProvider(client()).spawn(request())
    assert exc.value.leftover.volume_id == "vol_1" and exc.value.leftover.machine_app == APP
    assert "volume vol_1 left behind" in str(exc.value)


def test_ambiguous_machine_create_is_looked_up_by_name_and_destroyed(fly_config, fly):
    """A create that times out or 5xxs may still have happened: find the machine by the
    worker's name, destroy it, then delete the volume."""
    fly.expect("POST", f"{A}/volumes", body=volume_body(), json={"id": "vol_1"})
    for _ in range(4):  # retried, then given up
        fly.expect("POST", f"{A}/machines", body=machine_body(), status=503)
    fly.expect("GET", f"{A}/machines", json=[{"id": "m_x", "name": "w-1"}, {"id": "m_o"}])
    fly.expect("DELETE", f"{A}/machines/m_x", query={"force": "true"})
    fly.expect("DELETE", f"{A}/volumes/vol_1")
    with pytest.raises(ProviderError) as exc:
        FlyProvider(client()).spawn(request())
    assert "503" in str(exc.value) and not isinstance(exc.value, SpawnFailed)
    assert fly.calls[-3:] == [
        f"GET /apps/{APP}/machines",
        f"DELETE /apps/{APP}/machines/m_x?force=true",
        f"DELETE /apps/{APP}/volumes/vol_1",
    ]


def test_capacity_error_moves_to_next_region(fly_config, fly):
    fly.expect("POST", f"{A}/volumes", body=volume_body(), json={"id": "vol_a"})
    fly.expect(
        "POST",
        f"{A}/machines",
        body=machine_body(volume_id="vol_a"),
        status=412,
        json={"error": "insufficient resources"},
    )
    fly.expect("DELETE", f"{A}/volumes/vol_a")
    fly.expect("POST", f"{A}/volumes", body=volume_body(region="fra"), json={"id": "vol_b"})
    fly.expect(
        "POST",
        f"{A}/machines",
        body=machine_body(region="fra", volume_id="vol_b"),
        json={"id": "m_2", "region": "fra"},
    )
    result = FlyProvider(client()).spawn(request())
    assert (result.machine_id, result.region, result.volume_id) == ("m_2", "fra", "vol_b")
    assert fly.calls == [
        f"POST /apps/{APP}/volumes",
        f"POST /apps/{APP}/machines",
        f"DELETE /apps/{APP}/volumes/vol_a",
        f"POST /apps/{APP}/volumes",
        f"POST /apps/{APP}/machines",
    ]


def test_no_capacity_anywhere_is_an_error_and_leaves_nothing(fly_config, fly):
    fly.expect(
        "POST", f"{A}/volumes", body=volume_body(), status=400, json={"error": "no capacity"}
    )
    fly.expect(
        "POST",
        f"{A}/volumes",
        body=volume_body(region="fra"),
        status=403,
        json={"error": "over the allowed quota"},
    )
    with pytest.raises(ProviderError, match="No capacity in any region: ams: .*; fra: "):
        FlyProvider(client()).spawn(request())


def test_429_then_success_is_retried(fly_config, fly):
    fly.expect("GET", f"{A}/machines", status=429, headers={"Retry-After": "2"})
    fly.expect("GET", f"{A}/machines", json=[{"id": "m_1"}])
    sleeps = []
    assert FlyClient(TOKEN, sleep=sleeps.append).list_machines(APP) == [{"id": "m_1"}]
    assert sleeps == [2.0]
    assert fly.calls == [f"GET /apps/{APP}/machines"] * 2


def test_429_during_spawn_is_retried_with_the_same_body(fly_config, fly):
    fly.expect("POST", f"{A}/volumes", body=volume_body(), json={"id": "vol_1"})
    fly.expect("POST", f"{A}/machines", body=machine_body(), status=429)
    fly.expect("POST", f"{A}/machines", body=machine_body(), json={"id": "m_1"})
    assert FlyProvider(client()).spawn(request()).machine_id == "m_1"
    assert fly.calls == [
        f"POST /apps/{APP}/volumes",
        f"POST /apps/{APP}/machines",
        f"POST /apps/{APP}/machines",
    ]


# Client mechanics -----------------------------------------------------------------------


class RecordingSession:
    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.kwargs = []

    def request(self, method, url, **kwargs):
        self.kwargs.append(kwargs)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def _response(status, text=""):
    response = requests.Response()
    response.status_code = status
    response._content = text.encode()
    return response


def test_every_request_has_a_timeout_and_network_errors_are_retried(db):
    session = RecordingSession(
        [requests.ConnectTimeout("slow"), requests.ConnectionError("reset"), _response(200, "[]")]
    )
    sleeps = []
    fly = FlyClient(TOKEN, base_url=BASE, session=session, sleep=sleeps.append)
    assert fly.list_machines(APP) == []
    assert [k["timeout"] for k in session.kwargs] == [TIMEOUT] * 3
    assert sleeps == [1, 2]  # bounded exponential backoff


def test_persistent_network_error_carries_no_status_and_no_token(db):
    session = RecordingSession([requests.ConnectionError(f"Bearer {TOKEN}")] * 4)
    fly = FlyClient(TOKEN, base_url=BASE, session=session, sleep=no_sleep)
    with pytest.raises(FlyApiError) as exc:
        fly.list_volumes(APP)
    assert exc.value.status is None and "network error" in str(exc.value)
    assert TOKEN not in str(exc.value)


def test_errors_carry_status_and_body_but_never_the_token(fly_config, fly):
    fly.expect("GET", f"{A}/machines", status=401, text=f"bad token Bearer {TOKEN} for app")
    with pytest.raises(FlyApiError) as exc:
        client().list_machines(APP)
    assert exc.value.status == 401 and "bad token" in str(exc.value)
    assert "[redacted]" in str(exc.value) and TOKEN not in str(exc.value)
    assert TOKEN not in exc.value.body
    assert TOKEN not in repr(client())


# Teardown -------------------------------------------------------------------------------


def test_teardown_sequence(fly_config, fly):
    worker = fly_worker()
    fly.expect("POST", f"{A}/machines/m_1/cordon")
    fly.expect("POST", f"{A}/machines/m_1/stop")
    fly.expect("DELETE", f"{A}/machines/m_1")  # no force on the first try
    fly.expect("DELETE", f"{A}/volumes/vol_1")
    FlyProvider(client()).teardown(worker)
    assert fly.calls == [
        f"POST /apps/{APP}/machines/m_1/cordon",
        f"POST /apps/{APP}/machines/m_1/stop",
        f"DELETE /apps/{APP}/machines/m_1",
        f"DELETE /apps/{APP}/volumes/vol_1",
    ]


def test_teardown_with_404s_counts_as_gone(fly_config, fly):
    worker = fly_worker()
    fly.expect("POST", f"{A}/machines/m_1/cordon", status=404, json={"error": "not found"})
    fly.expect("DELETE", f"{A}/volumes/vol_1", status=404, json={"error": "not found"})
    FlyProvider(client()).teardown(worker)
    assert fly.calls == [
        f"POST /apps/{APP}/machines/m_1/cordon",
        f"DELETE /apps/{APP}/volumes/vol_1",
    ]


def test_teardown_destroy_404_counts_as_gone(fly_config, fly):
    worker = fly_worker()
    fly.expect("POST", f"{A}/machines/m_1/cordon")
    fly.expect("POST", f"{A}/machines/m_1/stop", status=500, json={"error": "boom"})
    fly.expect("POST", f"{A}/machines/m_1/stop", status=500, json={"error": "boom"})
    fly.expect("POST", f"{A}/machines/m_1/stop", status=500, json={"error": "boom"})
    fly.expect("POST", f"{A}/machines/m_1/stop", status=500, json={"error": "boom"})
    fly.expect("DELETE", f"{A}/machines/m_1", status=404, text="")
    fly.expect("DELETE", f"{A}/volumes/vol_1")
    FlyProvider(client()).teardown(worker)  # a failed stop is not fatal: destroy follows
    assert fly.calls[-2:] == [
        f"DELETE /apps/{APP}/machines/m_1",
        f"DELETE /apps/{APP}/volumes/vol_1",
    ]


def test_teardown_failure_keeps_the_volume_for_the_retry(fly_config, fly):
    worker = fly_worker()
    fly.expect("POST", f"{A}/machines/m_1/cordon")
    fly.expect("POST", f"{A}/machines/m_1/stop")
    fly.expect(
        "DELETE",
        f"{A}/machines/m_1",
        status=412,
        json={"error": "failed_precondition: machine not currently stopped"},
    )
    with pytest.raises(ProviderError, match="412.*not currently stopped"):
        FlyProvider(client()).teardown(worker)
    assert f"DELETE /apps/{APP}/volumes/vol_1" not in fly.calls  # attached: not yet


def test_teardown_retry_uses_force(fly_config, fly):
    worker = fly_worker()
    fly.expect("POST", f"{A}/machines/m_1/cordon")
    fly.expect("POST", f"{A}/machines/m_1/stop")
    fly.expect("DELETE", f"{A}/machines/m_1", query={"force": "true"})
    fly.expect("DELETE", f"{A}/volumes/vol_1")
    FlyProvider(client()).teardown(worker, force=True)
    assert fly.calls[2] == f"DELETE /apps/{APP}/machines/m_1?force=true"


def test_teardown_of_a_row_without_ids_finds_its_machine_and_volume_by_name(fly_config, fly):
    """A reconcile that died mid-spawn leaves a row with no ids: what it created is found
    by the worker's name, so nothing keeps billing."""
    worker = fly_worker(machine_id="", volume_id="", machine_app="")
    fly.expect("GET", f"{A}/machines", json=[{"id": "m_9", "name": "w-1"}, {"id": "m_0"}])
    fly.expect("POST", f"{A}/machines/m_9/cordon")
    fly.expect("POST", f"{A}/machines/m_9/stop")
    fly.expect("DELETE", f"{A}/machines/m_9")
    fly.expect(
        "GET",
        f"{A}/volumes",
        json=[{"id": "vol_9", "name": volume_name("agent_data", "w-1")}, {"id": "vol_0"}],
    )
    fly.expect("DELETE", f"{A}/volumes/vol_9")
    FlyProvider(client()).teardown(worker)
    assert len(fly.calls) == 6


# Cleanup --------------------------------------------------------------------------------

REPORT_KEYS = {
    "app_name",
    "dry_run",
    "machines_found",
    "machines_deleted",
    "machines_remaining",
    "machine_ids_found",
    "machine_ids_deleted",
    "machine_ids_remaining",
    "volumes_found",
    "volumes_deleted",
    "volumes_remaining",
    "volume_ids_found",
    "volume_ids_deleted",
    "volume_ids_remaining",
    "workers_stopped",
    "warnings",
    "errors",
}


def test_cleanup_dry_run_destroys_nothing(fly_config, fly):
    fly.expect("GET", A, json={"name": APP})
    fly.expect("GET", f"{A}/machines", json=[{"id": "m_1"}])
    fly.expect("GET", f"{A}/volumes", json=[{"id": "vol_1"}])
    out = io.StringIO()
    call_command("run_fly_cleanup", "--json", stdout=out)  # exit 0: a preview
    report = json.loads(out.getvalue())
    assert set(report) == REPORT_KEYS
    assert report["dry_run"] and report["machine_ids_found"] == ["m_1"]
    assert report["volume_ids_found"] == ["vol_1"] and report["machines_deleted"] == 0
    assert fly.calls == [
        f"GET /apps/{APP}",
        f"GET /apps/{APP}/machines",
        f"GET /apps/{APP}/volumes",
    ]
    assert not AuditEvent.objects.filter(action="fly.cleanup").exists()


def test_cleanup_happy_path_exact_sequence_and_report(fly_config, fly):
    cleanup_mocks(fly)
    report = run_fly_cleanup(apply=True, client=client(), actor="test")
    assert fly.calls == cleanup_sequence()
    assert set(report) == REPORT_KEYS
    assert report == {
        **report,
        "app_name": APP,
        "dry_run": False,
        "machines_found": 2,
        "machines_deleted": 2,
        "machines_remaining": 0,
        "machine_ids_deleted": ["m_1", "m_2"],
        "machine_ids_remaining": [],
        "volumes_found": 2,
        "volumes_deleted": 2,
        "volumes_remaining": 0,
        "volume_ids_deleted": ["vol_1", "vol_2"],
        "volume_ids_remaining": [],
        "warnings": [],
        "errors": [],
    }


def test_cleanup_one_failing_machine_does_not_stop_others(fly_config, fly):
    Worker.objects.create(worker_id="w-1", provider="fly", machine_app=APP, machine_id="m_1")
    Worker.objects.create(worker_id="w-2", provider="fly", machine_app=APP, machine_id="m_2")
    Worker.objects.create(worker_id="w-3", provider="fly", machine_app="other", machine_id="m_2")
    cleanup_mocks(fly, failing_machine="m_1", machines_left=["m_1"])
    report = run_fly_cleanup(apply=True, client=client(), actor="test")
    assert fly.calls == cleanup_sequence()  # m_2 and both volumes were still destroyed
    assert report["machine_ids_deleted"] == ["m_2"]
    assert report["machine_ids_remaining"] == ["m_1"] and report["machines_remaining"] == 1
    assert len(report["errors"]) == 1
    assert report["errors"][0].startswith("Machine m_1: destroy failed (Fly API DELETE")
    assert "409" in report["errors"][0] and "failed_precondition" in report["errors"][0]
    assert report["warnings"] == ["Fly cleanup left 1 machine(s) after verification: m_1"]
    assert report["volume_ids_deleted"] == ["vol_1", "vol_2"] and report["volumes_remaining"] == 0
    # Worker rows: the destroyed machine's row is stopped (token revoked); the failed one and
    # another app's row with the same machine id are left alone.
    statuses = dict(Worker.objects.values_list("worker_id", "status"))
    assert statuses == {"w-1": "active", "w-2": "stopped", "w-3": "active"}
    assert Worker.objects.get(worker_id="w-2").token_revoked_at is not None
    assert report["workers_stopped"] == 1
    audit = AuditEvent.objects.get(action="fly.cleanup")
    assert audit.actor == "test" and audit.details["errors"] == report["errors"]
    assert audit.details["machine_ids_remaining"] == ["m_1"]


def test_cleanup_verification_finding_leftovers_exits_1(fly_config, fly):
    """Every destroy call succeeded, yet Fly still lists a machine and a volume: reported
    as remaining, with warnings, and the command exits 1."""
    cleanup_mocks(fly, machines_left=["m_2"], volumes_left=["vol_2"])
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exc:
        call_command("run_fly_cleanup", "--apply", "--json", stdout=out, stderr=err)
    assert exc.value.code == 1
    assert err.getvalue().strip() == (
        f"Fly cleanup of {APP} is incomplete: 0 error(s), 1 machine(s) and 1 volume(s) remaining."
    )
    assert fly.calls == cleanup_sequence()
    report = json.loads(out.getvalue())
    assert report["errors"] == []
    assert report["machines_deleted"] == 2 and report["volumes_deleted"] == 2
    assert report["machine_ids_remaining"] == ["m_2"] and report["machines_remaining"] == 1
    assert report["volume_ids_remaining"] == ["vol_2"] and report["volumes_remaining"] == 1
    assert report["warnings"] == [
        "Fly cleanup left 1 machine(s) after verification: m_2",
        "Fly cleanup left 1 volume(s) after verification: vol_2",
    ]
    assert TOKEN not in out.getvalue()
    assert AuditEvent.objects.get(action="fly.cleanup").details["volume_ids_remaining"] == ["vol_2"]


def test_cleanup_command_prints_the_report_and_exits_0_when_clean(fly_config, fly):
    cleanup_mocks(fly)
    out = io.StringIO()
    call_command("run_fly_cleanup", "--apply", stdout=out)
    text = out.getvalue()
    assert "machines_deleted: 2" in text and "volume_ids_remaining: []" in text


def test_cleanup_verification_list_failing_still_cleans_volumes(fly_config, fly):
    fly.expect("GET", A, json={"name": APP})
    fly.expect("GET", f"{A}/machines", json=[{"id": "m_1"}])
    fly.expect("POST", f"{A}/machines/m_1/cordon")
    fly.expect("POST", f"{A}/machines/m_1/stop")
    fly.expect("DELETE", f"{A}/machines/m_1", query={"force": "true"})
    fly.expect("GET", f"{A}/machines", status=401, json={"error": "unauthorized"})
    fly.expect("GET", f"{A}/volumes", json=[{"id": "vol_1"}])
    fly.expect("DELETE", f"{A}/volumes/vol_1")
    fly.expect("GET", f"{A}/volumes", json=[])
    report = run_fly_cleanup(apply=True, client=client())
    assert report["volume_ids_deleted"] == ["vol_1"]
    assert report["errors"][0].startswith("Machine verification failed")
    assert report["machine_ids_remaining"] == ["m_1"]  # unverified counts as remaining


def test_cleanup_app_option_targets_that_app(fly_config, fly):
    RuntimeConfig.objects.filter(pk=1).update(provider_kind="local")
    cleanup_mocks(fly, app="other-app")
    out = io.StringIO()
    call_command("run_fly_cleanup", "--app", "other-app", "--apply", "--json", stdout=out)
    assert fly.calls == cleanup_sequence("other-app")
    assert json.loads(out.getvalue())["app_name"] == "other-app"


def test_cleanup_without_app_needs_the_fly_provider(fly_config, fly):
    RuntimeConfig.objects.filter(pk=1).update(provider_kind="local")
    with pytest.raises(CommandError, match="requires a Fly provider configuration"):
        call_command("run_fly_cleanup", "--apply")
    assert fly.calls == []


def test_cleanup_with_an_undecryptable_fly_token_is_one_clear_error(fly_config, fly, settings):
    from agents.models import Secret
    from agents.secret_store import import_secret

    settings.FLY_API_TOKEN = ""
    import_secret("fly.apiToken", TOKEN, actor="t")
    Secret.objects.filter(secret_ref="fly.apiToken").update(key_id="deadbeef")
    with pytest.raises(CommandError, match="'fly.apiToken' v1 .* not in AGENT_FACTORY_ENCRYP"):
        call_command("run_fly_cleanup", "--apply")
    assert fly.calls == []


def test_cleanup_refuses_without_app(db, settings):
    settings.FLY_API_TOKEN = TOKEN
    RuntimeConfig.get()
    RuntimeConfig.objects.filter(pk=1).update(provider_kind="fly", app_name="")
    with pytest.raises(CommandError, match="non-empty Fly app name"):
        call_command("run_fly_cleanup")


def test_cleanup_refuses_without_token(fly_config, settings):
    settings.FLY_API_TOKEN = ""
    with pytest.raises(CommandError, match="Missing Fly API token"):
        call_command("run_fly_cleanup", "--apply")


def test_cleanup_access_check_failure_destroys_nothing_and_is_audited(fly_config, fly):
    fly.expect("GET", A, status=404, json={"error": "app not found"})
    with pytest.raises(CommandError, match="404"):
        call_command("run_fly_cleanup", "--apply")
    assert fly.calls == [f"GET /apps/{APP}"]
    audit = AuditEvent.objects.get(action="fly.cleanup_failed")
    assert "app not found" in audit.details["error"] and TOKEN not in json.dumps(audit.details)


def test_nightly_cleanup_runs_only_when_enabled(fly_config, fly):
    assert run_scheduled_cleanup() is None  # off by default: not a single call
    assert fly.calls == []
    RuntimeConfig.objects.filter(pk=1).update(fly_cleanup_nightly=True)
    cleanup_mocks(fly)
    report = run_scheduled_cleanup()
    assert report["machines_deleted"] == 2 and fly.calls == cleanup_sequence()
    assert AuditEvent.objects.get(action="fly.cleanup").actor == "schedule:fly-cleanup-nightly"


def test_cleanup_waits_for_reconcile_and_says_when_it_could_not(fly_config, fly, monkeypatch):
    import threading

    from django.db import connections

    from workers.reconcile import reconcile_lock

    monkeypatch.setattr("fly.cleanup.CLEANUP_LOCK_WAIT_SECONDS", 0)
    cleanup_mocks(fly)
    held, release = threading.Event(), threading.Event()

    def hold():
        try:
            with reconcile_lock():
                held.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    try:
        report = run_fly_cleanup(apply=True, client=client())
    finally:
        release.set()
        thread.join(10)
    assert report["warnings"] == [
        "A reconcile pass was still running after 0 s; the cleanup went ahead anyway."
    ]
    assert report["machines_deleted"] == 2  # billing protection is not skipped


def test_cleanup_recovers_the_lease_of_a_stopped_worker(fly_config, fly, alpha_agent, enqueue):
    from django.utils import timezone

    from workers.leases import claim_next_job
    from workers.sweep import sweep_expired_leases

    message = enqueue("conv-1", "alpha")
    worker = Worker.objects.create(
        worker_id="w-2",
        provider="fly",
        machine_app=APP,
        machine_id="m_2",
        heartbeat_at=timezone.now(),
    )
    assert claim_next_job(worker).message.pk == message.pk
    cleanup_mocks(fly)
    run_fly_cleanup(apply=True, client=client())
    assert Worker.objects.get(pk=worker.pk).status == "stopped"
    assert sweep_expired_leases()["requeued"] == 1
    message.refresh_from_db()
    assert message.status == "queued" and message.attempts == 1


def test_machine_create_reply_without_id_is_treated_as_maybe_created(fly_config, fly):
    fly.expect("POST", f"{A}/volumes", body=volume_body(), json={"id": "vol_1"})
    fly.expect("POST", f"{A}/machines", body=machine_body(), json={"state": "created"})
    fly.expect("GET", f"{A}/machines", json=[{"id": "m_7", "name": "w-1"}])
    fly.expect("DELETE", f"{A}/machines/m_7", query={"force": "true"})
    fly.expect("DELETE", f"{A}/volumes/vol_1")
    with pytest.raises(ProviderError, match="response has no id"):
        FlyProvider(client()).spawn(request())
    assert len(fly.calls) == 5


def test_without_an_image_in_the_runtime_config_fly_runs_the_worker_image(
    fly_config, fly, settings
):
    RuntimeConfig.objects.filter(pk=1).update(image="")
    settings.AGENT_FACTORY_WORKER_IMAGE = "registry.fly.io/agent-factory-worker:v7"
    expected = machine_body()
    expected["config"]["image"] = "registry.fly.io/agent-factory-worker:v7"
    fly.expect("POST", f"{A}/volumes", body=volume_body(), json={"id": "vol_1"})
    fly.expect("POST", f"{A}/machines", body=expected, json={"id": "m_1"})
    FlyProvider(client()).spawn(request())
    assert RuntimeConfig.get().image == ""  # a default, not written into the row
