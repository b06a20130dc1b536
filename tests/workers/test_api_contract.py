"""The worker API contract (SPEC §7, §19): every endpoint's body shape and error answers."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from django.utils import timezone

from workers.errors import LeaseLost
from workers.models import DataSnapshot, Message

API = "/api/v1/worker"
TRIPLE = {"workspace_id": "default", "agent_key": "alpha", "conversation_id": "conv-1"}

# (method, path) for every endpoint; ids that do not exist are fine: auth comes first.
ENDPOINTS = [
    ("post", "control/"),
    ("post", "claim/"),
    ("get", "jobs/1/hydration/?lease_id=x"),
    ("post", "jobs/1/heartbeat/"),
    ("post", "jobs/1/complete/"),
    ("post", "jobs/1/fail/"),
    ("post", "jobs/1/delivered/"),
    ("post", "conversations/conv-1/messages/"),
    ("post", "snapshots/"),
    ("put", "snapshots/1/upload/"),
    ("post", "snapshots/1/finalize/"),
    ("post", "snapshots/1/fail/"),
    ("post", "snapshots/1/reject/"),
    ("get", "snapshots/latest/?workspace_id=default&agent_key=alpha&conversation_id=conv-1"),
    ("get", "snapshots/1/download/"),
    ("get", "attachments/1/download/"),
]


@pytest.fixture
def leased(alpha_agent, claim_as, enqueue):
    message = enqueue("conv-1", "alpha", "hello")
    worker, api, job = claim_as("w-contract")
    return message, worker, api, job


def call(api, method, path, body=None):
    if method == "get":
        return api.get(f"{API}/{path}")
    if method == "put":
        return api.put(f"{API}/{path}", b"bytes", content_type="application/octet-stream")
    return api.post(f"{API}/{path}", body or {}, format="json")


@pytest.mark.parametrize("method, path", ENDPOINTS)
@pytest.mark.parametrize("header", [None, "Bearer wk_abc_unknown", "Bearer ", "Basic abc", "x"])
def test_every_endpoint_is_401_without_a_valid_token(db, worker_api, method, path, header):
    from rest_framework.test import APIClient

    api = APIClient()
    if header is not None:
        api.credentials(HTTP_AUTHORIZATION=header)
    response = call(api, method, path)
    assert response.status_code == 401, (path, response.content)
    assert response.json()["error"] == "unauthorized"
    assert set(response.json()) == {"error", "detail"}


def test_claim_job_has_exactly_the_specified_fields(leased):
    message, worker, api, job = leased
    assert set(job) == {
        "message_id",
        "conversation_id",
        "agent_key",
        "lease_id",
        "lease_expires_at",
        "attempt",
        "payload",
        "delivered_at",  # §12: the reference worker skips a reply already delivered
    }
    expires = dt.datetime.fromisoformat(job["lease_expires_at"])
    assert expires.utcoffset() == dt.timedelta(0)
    assert job["delivered_at"] is None
    assert job["payload"]["provider_user_id"] == "u1"


def test_claim_with_nothing_to_do_is_job_null(leased):
    _, _, api, _ = leased
    assert api.post(f"{API}/claim/", {}, format="json").json() == {"job": None}


@pytest.mark.parametrize("body", [{"conversation_id": ""}, {"conversation_id": 5 * "x" * 60}])
def test_claim_bad_body_is_400(leased, body):
    _, _, api, _ = leased
    response = api.post(f"{API}/claim/", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "conversation_id" in response.json()["fields"]


def test_job_endpoint_bodies(leased):
    message, worker, api, job = leased
    path = f"{API}/jobs/{job['message_id']}"
    lease = {"lease_id": job["lease_id"]}
    beat = api.post(f"{path}/heartbeat/", lease, format="json").json()
    assert set(beat) == {"lease_expires_at"}
    assert dt.datetime.fromisoformat(beat["lease_expires_at"]) >= dt.datetime.fromisoformat(
        job["lease_expires_at"]
    )
    delivered = api.post(f"{path}/delivered/", lease, format="json").json()
    assert set(delivered) == {"delivered_at"}
    assert Message.objects.get(pk=message.pk).delivered_at is not None
    failed = api.post(f"{path}/fail/", {**lease, "error": "boom"}, format="json").json()
    assert set(failed) == {"status", "next_attempt_at"} and failed["status"] == "queued"
    assert dt.datetime.fromisoformat(failed["next_attempt_at"]) > timezone.now()


@pytest.mark.parametrize(
    "action, body, field",
    [
        ("heartbeat", {}, "lease_id"),
        ("complete", {"lease_id": ""}, "lease_id"),
        ("delivered", {"lease_id": "x" * 65}, "lease_id"),
        ("fail", {"lease_id": "x"}, "error"),
        ("fail", {"error": "x"}, "lease_id"),
    ],
)
def test_job_endpoint_bad_body_is_400_and_changes_nothing(leased, action, body, field):
    message, worker, api, job = leased
    before = Message.objects.get(pk=message.pk)
    response = api.post(f"{API}/jobs/{job['message_id']}/{action}/", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert field in response.json()["fields"]
    after = Message.objects.get(pk=message.pk)
    assert (after.status, after.attempts, after.lease_expires_at) == (
        before.status,
        before.attempts,
        before.lease_expires_at,
    )


@pytest.mark.parametrize("action", ["hydration", "heartbeat", "complete", "fail", "delivered"])
def test_unknown_job_is_409_lease_lost(leased, action):
    """§6.3: anything but the live lease of this worker is lease_lost (no existence oracle)."""
    _, _, api, job = leased
    path = f"{API}/jobs/999999/{action}/"
    if action == "hydration":
        response = api.get(path, {"lease_id": job["lease_id"]})
    else:
        response = api.post(path, {"lease_id": job["lease_id"], "error": "x"}, format="json")
    assert response.status_code == 409
    assert response.json() == {"error": "lease_lost", "detail": LeaseLost.default_detail}


def test_job_path_with_a_non_numeric_id_is_404(leased):
    _, _, api, job = leased
    response = api.post(f"{API}/jobs/abc/heartbeat/", {"lease_id": "x"}, format="json")
    assert response.status_code == 404


def prepare(api, **overrides):
    return api.post(f"{API}/snapshots/", {**TRIPLE, "reason": "drain", **overrides}, format="json")


def test_snapshot_prepare_answers_201_with_an_upload_url(leased):
    _, _, api, _ = leased
    response = prepare(api)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"snapshot_id", "upload_url"}
    assert body["upload_url"].endswith(f"{API}/snapshots/{body['snapshot_id']}/upload/")
    snapshot = DataSnapshot.objects.get(pk=body["snapshot_id"])
    assert (snapshot.status, snapshot.worker_id, snapshot.reason) == (
        "uploading",
        "w-contract",
        "drain",
    )


@pytest.mark.parametrize("missing", ["workspace_id", "agent_key", "conversation_id", "reason"])
def test_snapshot_prepare_requires_every_field(leased, missing):
    _, _, api, _ = leased
    body = {**TRIPLE, "reason": "drain"}
    del body[missing]
    response = api.post(f"{API}/snapshots/", body, format="json")
    assert response.status_code == 400 and missing in response.json()["fields"]
    assert not DataSnapshot.objects.exists()


def test_snapshot_prepare_for_a_foreign_conversation_is_403(leased):
    _, _, api, _ = leased
    response = prepare(api, conversation_id="not-mine")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert not DataSnapshot.objects.exists()


def test_snapshot_upload_then_reupload_after_ready_is_409(leased):
    _, _, api, _ = leased
    snapshot_id = prepare(api).json()["snapshot_id"]
    url = f"{API}/snapshots/{snapshot_id}/upload/"
    data = b"first archive"
    put = api.put(url, data, content_type="application/octet-stream")
    assert put.json() == {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
    # Uploading again before finalize replaces the bytes (a retried upload).
    data = b"second archive, longer"
    put = api.put(url, data, content_type="application/octet-stream")
    assert put.json()["size_bytes"] == len(data)
    digest = hashlib.sha256(data).hexdigest()
    finalize = api.post(
        f"{API}/snapshots/{snapshot_id}/finalize/",
        {"sha256": digest, "size_bytes": len(data)},
        format="json",
    )
    assert finalize.json() == {"status": "ready"}
    late = api.put(url, b"tampered", content_type="application/octet-stream")
    assert late.status_code == 409 and late.json()["error"] == "conflict"
    snapshot = DataSnapshot.objects.get(pk=snapshot_id)
    assert snapshot.sha256 == digest and snapshot.archive.read() == data
    again = api.post(f"{API}/snapshots/{snapshot_id}/fail/", {"error": "x"}, format="json")
    assert again.status_code == 409
    assert DataSnapshot.objects.get(pk=snapshot_id).status == "ready"


def test_finalize_with_a_wrong_size_is_checksum_mismatch(leased):
    _, _, api, _ = leased
    snapshot_id = prepare(api).json()["snapshot_id"]
    data = b"archive"
    api.put(f"{API}/snapshots/{snapshot_id}/upload/", data, content_type="application/octet-stream")
    response = api.post(
        f"{API}/snapshots/{snapshot_id}/finalize/",
        {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data) + 1},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"] == "checksum_mismatch"
    assert DataSnapshot.objects.get(pk=snapshot_id).status == "uploading"


@pytest.mark.parametrize(
    "body", [{"sha256": "zz", "size_bytes": 1}, {"sha256": "a" * 64, "size_bytes": -1}, {}]
)
def test_finalize_bad_body_is_400(leased, body):
    _, _, api, _ = leased
    snapshot_id = prepare(api).json()["snapshot_id"]
    response = api.post(f"{API}/snapshots/{snapshot_id}/finalize/", body, format="json")
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "method, path",
    [
        ("put", "snapshots/999999/upload/"),
        ("post", "snapshots/999999/finalize/"),
        ("post", "snapshots/999999/fail/"),
        ("get", "snapshots/999999/download/"),
        ("get", "attachments/999999/download/"),
    ],
)
def test_unknown_snapshot_or_attachment_is_404(leased, method, path):
    _, _, api, _ = leased
    body = {"sha256": "a" * 64, "size_bytes": 1, "error": "x"}
    response = call(api, method, path, body)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found" and set(response.json()) == {"error", "detail"}


def test_latest_snapshot_is_null_when_there_is_none(leased):
    _, _, api, _ = leased
    assert api.get(f"{API}/snapshots/latest/", TRIPLE).json() == {"snapshot": None}


def test_latest_snapshot_body_and_download_only_for_the_conversations_worker(
    leased, make_worker, worker_api
):
    _, _, api, _ = leased
    snapshot_id = prepare(api).json()["snapshot_id"]
    data = b"workspace"
    api.put(f"{API}/snapshots/{snapshot_id}/upload/", data, content_type="application/octet-stream")
    api.post(
        f"{API}/snapshots/{snapshot_id}/finalize/",
        {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)},
        format="json",
    )
    # Any worker may look the snapshot up ...
    _, stranger_token = make_worker("w-stranger", heartbeat_at=timezone.now())
    stranger = worker_api(stranger_token)
    found = stranger.get(f"{API}/snapshots/latest/", TRIPLE).json()["snapshot"]
    assert set(found) == {"snapshot_id", "sha256", "size_bytes", "created_at", "download_url"}
    assert found["snapshot_id"] == snapshot_id and found["size_bytes"] == len(data)
    assert found["sha256"] == hashlib.sha256(data).hexdigest()
    # ... but only the conversation's worker may download it.
    path = found["download_url"].replace("http://testserver", "")
    denied = stranger.get(path)
    assert denied.status_code == 403 and denied.json() == {
        "error": "forbidden",
        "detail": "Only a worker assigned to this conversation may download it.",
    }
    assert b"".join(api.get(path).streaming_content) == data


def test_snapshot_prepare_under_another_agent_key_is_400(leased, beta_agent):
    _, _, api, _ = leased
    response = prepare(api, agent_key="beta")
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "detail": "Conversation 'conv-1' belongs to agent 'alpha', not 'beta'.",
    }
    assert not DataSnapshot.objects.exists()
