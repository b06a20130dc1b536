"""Reconcile driving the real Fly provider against the strict `responses` mock: what the
worker rows record, and that nothing is left billing after failures."""

from __future__ import annotations

import json

from django.utils import timezone

from agents.models import AuditEvent, RuntimeConfig
from tests.fly.conftest import APP, TOKEN, A, fly_worker, machine_body, volume_body
from workers.models import Worker
from workers.reconcile import reconcile
from workers.tokens import authenticate


def test_reconcile_spawns_a_machine_and_records_it(fly_config, fly, alpha_agent, enqueue):
    enqueue("conv-1", "alpha")
    fly.mock.add("POST", f"{A}/volumes", json={"id": "vol_1"})
    fly.mock.add("POST", f"{A}/machines", json={"id": "m_1", "region": "ams"})
    report = reconcile()
    worker = Worker.objects.get()
    assert report.spawned == [worker.worker_id]
    assert fly.calls == [f"POST /apps/{APP}/volumes", f"POST /apps/{APP}/machines"]
    assert fly.body(0) == volume_body(worker.worker_id)
    body = fly.body(1)
    token = body["config"]["env"]["AGENT_FACTORY_WORKER_TOKEN"]
    assert authenticate(token) == worker  # the fresh token, minted for this worker
    expected = machine_body(worker.worker_id)
    expected["config"]["env"]["AGENT_FACTORY_WORKER_TOKEN"] = token
    assert body == expected
    assert all(c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in fly.mock.calls)
    assert (worker.machine_app, worker.machine_id, worker.machine_region, worker.volume_id) == (
        APP,
        "m_1",
        "ams",
        "vol_1",
    )
    assert worker.status == "active" and worker.status_reason == "spawned"


def test_spawn_failure_deletes_the_volume_and_records_the_error(
    fly_config,
    fly,
    alpha_agent,
    enqueue,
):
    enqueue("conv-1", "alpha")
    fly.mock.add("POST", f"{A}/volumes", json={"id": "vol_1"})
    fly.mock.add("POST", f"{A}/machines", status=422, json={"error": "invalid image ref"})
    fly.mock.add("DELETE", f"{A}/volumes/vol_1")
    report = reconcile()
    assert fly.calls == [
        f"POST /apps/{APP}/volumes",
        f"POST /apps/{APP}/machines",
        f"DELETE /apps/{APP}/volumes/vol_1",
    ]
    worker = Worker.objects.get()
    assert report.spawn_failed == [worker.worker_id]
    assert worker.status == "stopped" and worker.status_reason == "spawn failed"
    assert "422" in worker.last_error and "invalid image ref" in worker.last_error
    assert TOKEN not in worker.last_error
    assert worker.token_hash == "" and worker.token_revoked_at is not None
    audit = AuditEvent.objects.get(action="workers.reconcile")
    assert audit.details["spawn_failed"] == [worker.worker_id]
    assert "invalid image ref" in json.dumps(audit.details["errors"])


def test_volume_left_by_a_failed_spawn_is_deleted_on_the_next_pass(
    fly_config,
    fly,
    alpha_agent,
    enqueue,
):
    RuntimeConfig.objects.filter(pk=1).update(max_workers=1)
    enqueue("conv-1", "alpha")
    fly.mock.add("POST", f"{A}/volumes", json={"id": "vol_1"})
    fly.mock.add("POST", f"{A}/machines", status=422, json={"error": "bad"})
    fly.expect("DELETE", f"{A}/volumes/vol_1", status=403, json={"error": "volume is busy"})
    reconcile()
    worker = Worker.objects.get()
    # Not forgotten: kept in teardown with the volume it could not delete.
    assert worker.status == "stopping" and worker.volume_id == "vol_1"
    assert "volume vol_1 left behind" in worker.last_error
    # Next pass (max_workers reached, so no new spawn): the teardown deletes it.
    fly.mock.add("GET", f"{A}/machines", json=[])  # no machine id: looked up by name
    fly.mock.add("DELETE", f"{A}/volumes/vol_1")
    report = reconcile()
    assert fly.calls[-2:] == [f"GET /apps/{APP}/machines", f"DELETE /apps/{APP}/volumes/vol_1"]
    assert report.stopped == [worker.worker_id]
    assert Worker.objects.get().status == "stopped"


def test_gone_machine_still_gets_its_volume_deleted(fly_config, fly):
    now = timezone.now()
    worker = fly_worker(
        status="active",
        machine_region="ams",
        heartbeat_at=now,
        last_claim_at=now,  # it worked: would wait for a snapshot, but not when gone
    )
    fly.mock.add("GET", f"{A}/machines/m_1", status=404, json={"error": "machine not found"})
    fly.mock.add("POST", f"{A}/machines/m_1/cordon", status=404, json={"error": "not found"})
    fly.mock.add("DELETE", f"{A}/volumes/vol_1")
    report = reconcile()
    assert fly.calls == [
        f"GET /apps/{APP}/machines/m_1",
        f"POST /apps/{APP}/machines/m_1/cordon",
        f"DELETE /apps/{APP}/volumes/vol_1",
    ]
    assert report.drained == ["w-1"] and report.stopped == ["w-1"]
    worker.refresh_from_db()
    assert worker.status == "stopped" and worker.status_reason == "machine gone"


def test_failed_teardown_is_retried_with_force_next_pass(fly_config, fly):
    fly_worker()
    fly.mock.add("GET", f"{A}/machines/m_1", json={"id": "m_1", "state": "stopping"})
    fly.mock.add("POST", f"{A}/machines/m_1/cordon")
    fly.mock.add("POST", f"{A}/machines/m_1/stop")
    fly.mock.add("DELETE", f"{A}/machines/m_1", status=412, json={"error": "not currently stopped"})
    assert reconcile().teardown_failed == ["w-1"]
    assert Worker.objects.get().status == "stopping"
    fly.mock.add("GET", f"{A}/machines/m_1", json={"id": "m_1", "state": "stopped"})
    fly.mock.add("POST", f"{A}/machines/m_1/cordon")
    fly.mock.add("POST", f"{A}/machines/m_1/stop")
    fly.expect("DELETE", f"{A}/machines/m_1", query={"force": "true"})
    fly.mock.add("DELETE", f"{A}/volumes/vol_1")
    assert reconcile().stopped == ["w-1"]
    assert fly.calls[-3:] == [
        f"POST /apps/{APP}/machines/m_1/stop",
        f"DELETE /apps/{APP}/machines/m_1?force=true",
        f"DELETE /apps/{APP}/volumes/vol_1",
    ]
