"""Snapshots (SPEC §9): scoping, failure paths, retention that deletes files."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
import time_machine
from django.core.files.storage import default_storage
from django.utils import timezone

from workers.models import DataSnapshot, Worker
from workers.snapshots import expire_old_snapshots, latest_snapshot

API = "/api/v1/worker"
TRIPLE = {"workspace_id": "default", "agent_key": "alpha", "conversation_id": "conv-s"}


@pytest.fixture
def leased(alpha_agent, claim_as, enqueue):
    enqueue("conv-s", "alpha")
    return claim_as("w-snap")


def upload(api, data=b"tarball", **overrides):
    prep = api.post(f"{API}/snapshots/", {**TRIPLE, "reason": "drain", **overrides}, format="json")
    assert prep.status_code == 201, prep.content
    snapshot_id = prep.json()["snapshot_id"]
    put = api.put(
        f"{API}/snapshots/{snapshot_id}/upload/", data, content_type="application/octet-stream"
    )
    assert put.status_code == 200, put.content
    return snapshot_id


def finalize(api, snapshot_id, data=b"tarball"):
    return api.post(
        f"{API}/snapshots/{snapshot_id}/finalize/",
        {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)},
        format="json",
    )


def test_prepare_refuses_a_conversation_the_worker_never_served(leased):
    _, api, _ = leased
    response = api.post(
        f"{API}/snapshots/",
        {**TRIPLE, "conversation_id": "someone-else", "reason": "drain"},
        format="json",
    )
    assert response.status_code == 403
    assert not DataSnapshot.objects.exists()


def test_prepare_validates_its_body(leased):
    _, api, _ = leased
    response = api.post(f"{API}/snapshots/", {**TRIPLE, "reason": "whim"}, format="json")
    assert response.status_code == 400
    assert "reason" in response.json()["fields"]
    assert not DataSnapshot.objects.exists()


def test_another_workers_snapshot_is_404(leased, make_worker, worker_api):
    _, api, _ = leased
    snapshot_id = upload(api)
    _, other = make_worker("w-other")
    response = worker_api(other).post(
        f"{API}/snapshots/{snapshot_id}/fail/", {"error": "x"}, format="json"
    )
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert DataSnapshot.objects.get(pk=snapshot_id).status == DataSnapshot.UPLOADING


def test_failed_snapshot_cannot_be_finalized_and_is_never_restored(leased):
    _, api, _ = leased
    snapshot_id = upload(api)
    assert api.post(
        f"{API}/snapshots/{snapshot_id}/fail/", {"error": "disk full"}, format="json"
    ).json() == {"status": "failed"}
    late = finalize(api, snapshot_id)
    assert late.status_code == 409
    assert DataSnapshot.objects.get(pk=snapshot_id).error == "disk full"
    assert latest_snapshot(**TRIPLE) is None


def test_finalize_before_upload_is_refused(leased):
    _, api, _ = leased
    prep = api.post(f"{API}/snapshots/", {**TRIPLE, "reason": "manual"}, format="json")
    response = finalize(api, prep.json()["snapshot_id"])
    assert response.status_code == 400
    assert DataSnapshot.objects.get().status == DataSnapshot.UPLOADING


def test_latest_is_scoped_to_the_whole_triple(leased):
    _, api, _ = leased
    mine = upload(api)
    finalize(api, mine)
    other_workspace = upload(api, workspace_id="ws-2")
    finalize(api, other_workspace)
    assert latest_snapshot(**TRIPLE).pk == mine
    assert latest_snapshot(**{**TRIPLE, "workspace_id": "ws-2"}).pk == other_workspace
    assert latest_snapshot(**{**TRIPLE, "agent_key": "beta"}) is None
    missing = api.get(f"{API}/snapshots/latest/", {"workspace_id": "default"})
    assert missing.status_code == 400


def test_finalizing_a_draining_workers_snapshot_moves_it_to_stopping(leased):
    worker, api, _ = leased
    snapshot_id = upload(api)
    Worker.objects.filter(pk=worker.pk).update(status=Worker.DRAINING)
    assert finalize(api, snapshot_id).status_code == 200
    worker.refresh_from_db()
    assert worker.status == Worker.STOPPING


def test_retention_expires_rows_and_deletes_their_files(leased, runtime_config):
    _, api, _ = leased
    snapshot_id = upload(api)
    finalize(api, snapshot_id)
    snapshot = DataSnapshot.objects.get(pk=snapshot_id)
    name = snapshot.archive.name
    assert default_storage.exists(name)
    assert expire_old_snapshots() == {"expired": 0, "files_deleted": 0}
    retention = dt.timedelta(seconds=runtime_config.snapshot_retention_seconds)
    with time_machine.travel(snapshot.expires_at - dt.timedelta(seconds=1)):
        assert latest_snapshot(**TRIPLE).pk == snapshot_id
        assert expire_old_snapshots()["expired"] == 0
    with time_machine.travel(snapshot.completed_at + retention + dt.timedelta(seconds=1)):
        assert latest_snapshot(**TRIPLE) is None
        assert expire_old_snapshots() == {"expired": 1, "files_deleted": 1}
    assert not default_storage.exists(name)
    snapshot.refresh_from_db()
    assert snapshot.status == DataSnapshot.EXPIRED and not snapshot.archive


def test_abandoned_upload_is_cleaned_after_a_day(leased):
    _, api, _ = leased
    snapshot_id = upload(api)
    name = DataSnapshot.objects.get(pk=snapshot_id).archive.name
    with time_machine.travel(timezone.now() + dt.timedelta(days=1, minutes=1)):
        assert expire_old_snapshots()["expired"] == 1
    assert not default_storage.exists(name)


def test_retention_runs_hourly_on_the_schedule():
    from django.utils.module_loading import import_string

    from workers.schedules import SCHEDULES

    entries = {entry.name: (entry.func, entry.kind, entry.every) for entry in SCHEDULES}
    func, kind, _ = entries["expire-snapshots"]
    assert kind == "H"
    assert import_string(func) is expire_old_snapshots
    func, kind, every = entries["sweep-expired-leases"]
    from workers.sweep import sweep_expired_leases

    assert import_string(func) is sweep_expired_leases and (kind, every) == ("I", 1)


def test_retention_keeps_unexpired_and_uploading_rows(leased):
    _, api, _ = leased
    keep = upload(api)
    finalize(api, keep)
    in_progress = upload(api)
    names = [DataSnapshot.objects.get(pk=pk).archive.name for pk in (keep, in_progress)]
    with time_machine.travel(timezone.now() + dt.timedelta(hours=23)):
        assert expire_old_snapshots() == {"expired": 0, "files_deleted": 0}
    assert all(default_storage.exists(name) for name in names)
    assert DataSnapshot.objects.get(pk=in_progress).status == DataSnapshot.UPLOADING


def test_a_refused_archive_is_rejected_and_latest_falls_back(leased, make_worker, worker_api):
    """SPEC §23: a restoring worker refuses a ready snapshot; it becomes failed with the
    reason (audited) and latest offers the next older ready one."""
    from agents.models import AuditEvent

    _, api, _ = leased
    older = upload(api, b"older")
    finalize(api, older, b"older")
    newer = upload(api, b"newer")
    finalize(api, newer, b"newer")
    assert latest_snapshot(**TRIPLE).pk == newer
    _, stranger = make_worker("w-stranger")
    refused = worker_api(stranger).post(
        f"{API}/snapshots/{newer}/reject/", {"error": "link escapes"}, format="json"
    )
    assert refused.status_code == 403
    assert DataSnapshot.objects.get(pk=newer).status == DataSnapshot.READY

    response = api.post(
        f"{API}/snapshots/{newer}/reject/", {"error": "link 'x' leaves the data dir"}, format="json"
    )
    assert response.status_code == 200 and response.json() == {"status": "failed"}
    rejected = DataSnapshot.objects.get(pk=newer)
    assert rejected.status == DataSnapshot.FAILED
    assert rejected.error == "link 'x' leaves the data dir"
    event = AuditEvent.objects.get(action="snapshot.rejected")
    assert event.actor == "worker:w-snap" and event.target_id == str(newer)
    assert event.details["reason"] == "link 'x' leaves the data dir"
    body = api.get(f"{API}/snapshots/latest/", TRIPLE).json()
    assert body["snapshot"]["snapshot_id"] == older
    # A second refusal of the same archive changes nothing.
    again = api.post(f"{API}/snapshots/{newer}/reject/", {"error": "other"}, format="json")
    assert again.status_code == 200
    assert DataSnapshot.objects.get(pk=newer).error == "link 'x' leaves the data dir"
    assert AuditEvent.objects.filter(action="snapshot.rejected").count() == 1


def test_reject_refuses_uploads_and_needs_a_reason(leased):
    _, api, _ = leased
    in_progress = upload(api)
    response = api.post(f"{API}/snapshots/{in_progress}/reject/", {"error": "x"}, format="json")
    assert response.status_code == 409 and response.json()["error"] == "conflict"
    empty = api.post(f"{API}/snapshots/{in_progress}/reject/", {}, format="json")
    assert empty.status_code == 400
    assert DataSnapshot.objects.get(pk=in_progress).status == DataSnapshot.UPLOADING


def test_latest_before_answers_the_next_older_ready_snapshot(leased):
    _, api, _ = leased
    ids = []
    for data in (b"one", b"two", b"three"):
        ids.append(upload(api, data))
        finalize(api, ids[-1], data)
    first, second, third = ids
    assert latest_snapshot(**TRIPLE, before=third).pk == second
    assert latest_snapshot(**TRIPLE, before=second).pk == first
    assert latest_snapshot(**TRIPLE, before=first) is None
    other = upload(api, b"elsewhere", workspace_id="ws-2")
    finalize(api, other, b"elsewhere")
    # An id of another triple is not a reference point: nothing is "older" than it.
    assert latest_snapshot(**TRIPLE, before=other) is None
    body = api.get(f"{API}/snapshots/latest/", {**TRIPLE, "before": third}).json()
    assert body["snapshot"]["snapshot_id"] == second
    assert api.get(f"{API}/snapshots/latest/", {**TRIPLE, "before": "x"}).status_code == 400
