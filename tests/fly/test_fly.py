"""Fly client, provider and cleanup against `responses`: the exact sequence of API calls.

Every test uses a strict RequestsMock: an unexpected call fails (ConnectionError), and a
registered call that never happens fails too (assert_all_requests_are_fired).
"""

from __future__ import annotations

import io
import json

import pytest
import responses
from django.core.management import call_command
from responses import matchers

from agents.models import AuditEvent, RuntimeConfig
from fly.cleanup import run_fly_cleanup
from fly.client import FlyApiError, FlyClient
from fly.provider import FlyProvider, volume_name
from workers.models import Worker
from workers.providers.base import ProviderError, SpawnRequest

BASE = "http://fly.test/v1"
TOKEN = "fly-secret-token-123"
APP = "af-workers"


@pytest.fixture
def fly_config(db, settings):
    settings.FLY_API_TOKEN = TOKEN
    RuntimeConfig.get()
    RuntimeConfig.objects.filter(pk=1).update(
        provider_kind="fly",
        app_name=APP,
        image="registry.fly.io/agent:1",
        region="ams",
        fallback_regions=["fra"],
        volume_name="agent_data",
        volume_size_gb=2,
    )


@pytest.fixture
def fly():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def calls(mock) -> list[str]:
    return [f"{c.request.method} {c.request.url.replace(BASE, '')}" for c in mock.calls]


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


def test_spawn_creates_volume_then_machine(fly_config, fly):
    name = volume_name("agent_data", "w-1")
    fly.post(
        f"{BASE}/apps/{APP}/volumes",
        json={"id": "vol_1"},
        match=[matchers.json_params_matcher({"name": name, "region": "ams", "size_gb": 2})],
    )
    fly.post(f"{BASE}/apps/{APP}/machines", json={"id": "m_1", "region": "ams"})
    result = FlyProvider(client()).spawn(request())
    assert (result.machine_id, result.volume_id, result.region) == ("m_1", "vol_1", "ams")
    assert calls(fly) == [f"POST /apps/{APP}/volumes", f"POST /apps/{APP}/machines"]
    body = json.loads(fly.calls[1].request.body)
    assert body["name"] == "w-1" and body["region"] == "ams"
    assert body["config"]["mounts"] == [{"volume": "vol_1", "path": "/data"}]
    env = body["config"]["env"]
    assert env["AGENT_FACTORY_WORKER_TOKEN"] == "wk_tok"
    assert env["AGENT_FACTORY_CONVERSATION_ID"] == "conv-1"
    assert env["AGENT_FACTORY_API_URL"] == "https://factory.test"
    assert fly.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert len(name) <= 30


def test_spawn_forwards_bridge_secrets(fly_config, fly, alpha_agent):
    from agents.secret_store import import_secret

    alpha_agent.bridge_config = {"enabled": True, "base_url": "https://app", "service_id": "svc"}
    alpha_agent.save()
    import_secret("agent-bridge.serviceKey", "svc-key", actor="t")
    import_secret("agent-bridge.linkingSharedSecret", "link-secret", actor="t")
    fly.post(f"{BASE}/apps/{APP}/volumes", json={"id": "vol_1"})
    fly.post(f"{BASE}/apps/{APP}/machines", json={"id": "m_1"})
    FlyProvider(client()).spawn(request())
    env = json.loads(fly.calls[1].request.body)["config"]["env"]
    assert env["OPENCLAW_SERVICE_ID"] == "svc"
    assert env["OPENCLAW_SERVICE_KEY"] == "svc-key"
    assert env["OPENCLAW_LINKING_SHARED_SECRET"] == "link-secret"


def test_spawn_failure_deletes_the_new_volume(fly_config, fly):
    fly.post(f"{BASE}/apps/{APP}/volumes", json={"id": "vol_1"})
    fly.post(f"{BASE}/apps/{APP}/machines", status=422, json={"error": "invalid image"})
    fly.delete(f"{BASE}/apps/{APP}/volumes/vol_1")
    with pytest.raises(ProviderError) as exc:
        FlyProvider(client()).spawn(request())
    assert "422" in str(exc.value) and "invalid image" in str(exc.value)
    assert TOKEN not in str(exc.value)
    assert calls(fly) == [
        f"POST /apps/{APP}/volumes",
        f"POST /apps/{APP}/machines",
        f"DELETE /apps/{APP}/volumes/vol_1",
    ]


def test_capacity_error_moves_to_next_region(fly_config, fly):
    fly.post(
        f"{BASE}/apps/{APP}/volumes",
        json={"id": "vol_a"},
        match=[matchers.json_params_matcher({"region": "ams"}, strict_match=False)],
    )
    fly.post(
        f"{BASE}/apps/{APP}/machines",
        status=412,
        json={"error": "insufficient resources"},
        match=[matchers.json_params_matcher({"region": "ams"}, strict_match=False)],
    )
    fly.delete(f"{BASE}/apps/{APP}/volumes/vol_a")
    fly.post(
        f"{BASE}/apps/{APP}/volumes",
        json={"id": "vol_b"},
        match=[matchers.json_params_matcher({"region": "fra"}, strict_match=False)],
    )
    fly.post(
        f"{BASE}/apps/{APP}/machines",
        json={"id": "m_2", "region": "fra"},
        match=[matchers.json_params_matcher({"region": "fra"}, strict_match=False)],
    )
    result = FlyProvider(client()).spawn(request())
    assert (result.machine_id, result.region, result.volume_id) == ("m_2", "fra", "vol_b")
    assert calls(fly) == [
        f"POST /apps/{APP}/volumes",
        f"POST /apps/{APP}/machines",
        f"DELETE /apps/{APP}/volumes/vol_a",
        f"POST /apps/{APP}/volumes",
        f"POST /apps/{APP}/machines",
    ]


def test_429_then_success_is_retried(fly_config, fly):
    fly.get(f"{BASE}/apps/{APP}/machines", status=429, headers={"Retry-After": "2"})
    fly.get(f"{BASE}/apps/{APP}/machines", json=[{"id": "m_1"}])
    sleeps = []
    assert FlyClient(TOKEN, sleep=sleeps.append).list_machines(APP) == [{"id": "m_1"}]
    assert sleeps == [2.0]


def test_teardown_sequence(fly_config, fly):
    worker = Worker.objects.create(
        worker_id="w-1",
        provider="fly",
        machine_app=APP,
        machine_id="m_1",
        volume_id="vol_1",
        status="stopping",
    )
    fly.post(f"{BASE}/apps/{APP}/machines/m_1/cordon", json={})
    fly.post(f"{BASE}/apps/{APP}/machines/m_1/stop", json={})
    fly.delete(f"{BASE}/apps/{APP}/machines/m_1")
    fly.delete(f"{BASE}/apps/{APP}/volumes/vol_1")
    FlyProvider(client()).teardown(worker)
    assert calls(fly) == [
        f"POST /apps/{APP}/machines/m_1/cordon",
        f"POST /apps/{APP}/machines/m_1/stop",
        f"DELETE /apps/{APP}/machines/m_1",
        f"DELETE /apps/{APP}/volumes/vol_1",
    ]


def test_teardown_with_404s_counts_as_gone(fly_config, fly):
    worker = Worker.objects.create(
        worker_id="w-1",
        provider="fly",
        machine_app=APP,
        machine_id="m_1",
        volume_id="vol_1",
        status="stopping",
    )
    fly.post(f"{BASE}/apps/{APP}/machines/m_1/cordon", status=404, json={"error": "not found"})
    fly.delete(f"{BASE}/apps/{APP}/volumes/vol_1", status=404, json={"error": "not found"})
    FlyProvider(client()).teardown(worker)
    assert calls(fly) == [
        f"POST /apps/{APP}/machines/m_1/cordon",
        f"DELETE /apps/{APP}/volumes/vol_1",
    ]


def test_teardown_retry_uses_force(fly_config, fly):
    worker = Worker.objects.create(
        worker_id="w-1", provider="fly", machine_app=APP, machine_id="m_1", status="stopping"
    )
    fly.post(f"{BASE}/apps/{APP}/machines/m_1/cordon", json={})
    fly.post(f"{BASE}/apps/{APP}/machines/m_1/stop", json={})
    fly.delete(
        f"{BASE}/apps/{APP}/machines/m_1", match=[matchers.query_param_matcher({"force": "true"})]
    )
    FlyProvider(client()).teardown(worker, force=True)


def cleanup_mocks(fly, *, failing_machine=None, leftovers=()):
    fly.get(f"{BASE}/apps/{APP}", json={"name": APP})
    fly.get(f"{BASE}/apps/{APP}/machines", json=[{"id": "m_1"}, {"id": "m_2"}])
    for machine in ("m_1", "m_2"):
        fly.post(f"{BASE}/apps/{APP}/machines/{machine}/cordon", json={})
        fly.post(f"{BASE}/apps/{APP}/machines/{machine}/stop", json={})
        if machine == failing_machine:
            fly.delete(
                f"{BASE}/apps/{APP}/machines/{machine}",
                status=409,
                json={"error": "failed_precondition"},
            )
        else:
            fly.delete(f"{BASE}/apps/{APP}/machines/{machine}")
    fly.get(f"{BASE}/apps/{APP}/machines", json=[{"id": m} for m in leftovers])
    fly.get(f"{BASE}/apps/{APP}/volumes", json=[{"id": "vol_1"}])
    fly.delete(f"{BASE}/apps/{APP}/volumes/vol_1")
    fly.get(f"{BASE}/apps/{APP}/volumes", json=[])


def test_cleanup_dry_run_destroys_nothing(fly_config, fly):
    fly.get(f"{BASE}/apps/{APP}", json={"name": APP})
    fly.get(f"{BASE}/apps/{APP}/machines", json=[{"id": "m_1"}])
    fly.get(f"{BASE}/apps/{APP}/volumes", json=[{"id": "vol_1"}])
    report = run_fly_cleanup(client=client())
    assert report["dry_run"] and report["machines_found"] == 1 and report["volumes_found"] == 1
    assert report["machines_deleted"] == 0
    assert all(c.request.method == "GET" for c in fly.calls)


def test_cleanup_one_failing_machine_does_not_stop_others(fly_config, fly):
    Worker.objects.create(worker_id="w-2", provider="fly", machine_app=APP, machine_id="m_2")
    cleanup_mocks(fly, failing_machine="m_1", leftovers=["m_1"])
    report = run_fly_cleanup(apply=True, client=client(), actor="test")
    assert report["machine_ids_deleted"] == ["m_2"]
    assert report["machine_ids_remaining"] == ["m_1"]
    assert report["errors"] and report["errors"][0].startswith("Machine m_1: destroy failed")
    assert "left 1 machine(s) after verification: m_1" in report["warnings"][0]
    assert report["volume_ids_deleted"] == ["vol_1"] and report["volumes_remaining"] == 0
    assert report["workers_stopped"] == 1 and Worker.objects.get().status == "stopped"
    assert AuditEvent.objects.get(action="fly.cleanup").details["machines_deleted"] == 1
    assert calls(fly)[0] == f"GET /apps/{APP}"


def test_cleanup_command_exit_code_and_json(fly_config, fly):
    cleanup_mocks(fly, leftovers=["m_9"])
    out = io.StringIO()
    with pytest.raises(SystemExit) as exc:
        call_command("run_fly_cleanup", "--apply", "--json", stdout=out)
    assert exc.value.code == 1
    report = json.loads(out.getvalue())
    assert report["machine_ids_remaining"] == ["m_9"] and TOKEN not in out.getvalue()


def test_cleanup_refuses_without_app(db, settings):
    from django.core.management import CommandError

    settings.FLY_API_TOKEN = TOKEN
    with pytest.raises(CommandError, match="non-empty Fly app name"):
        call_command("run_fly_cleanup")


def test_errors_never_carry_the_token(fly_config, fly):
    fly.get(f"{BASE}/apps/{APP}/machines", status=401, body=f"bad token {TOKEN[:3]}")
    with pytest.raises(FlyApiError) as exc:
        client().list_machines(APP)
    assert TOKEN not in str(exc.value) and exc.value.status == 401
    assert TOKEN not in repr(client())
