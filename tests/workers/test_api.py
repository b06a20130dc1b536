"""Worker REST API: every endpoint's happy path and its 400/401/403/404/409 answers."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
import time_machine
from django.utils import timezone

from agents.models import ConversationEntry
from agents.secret_store import import_secret
from workers.models import Message, Worker

API = "/api/v1/worker"


@pytest.fixture
def setup(alpha_agent, make_worker, worker_api, enqueue):
    message = enqueue("conv-1", "alpha", "hi there")
    worker, token = make_worker("w-a", heartbeat_at=timezone.now())
    return message, worker, worker_api(token)


def claim(api, **body):
    response = api.post(f"{API}/claim/", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()["job"]


def test_missing_and_unknown_tokens_are_401(db, worker_api):
    for token in (None, "wk_nope_nope", "garbage"):
        response = worker_api(token).post(f"{API}/claim/", {}, format="json")
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"


def test_revoked_token_is_401(setup, make_worker, worker_api):
    from workers.tokens import revoke_worker_token

    worker, token = make_worker("w-revoked")
    revoke_worker_token(worker)
    assert worker_api(token).post(f"{API}/control/", {}, format="json").status_code == 401


def test_claim_returns_job_with_attempt_and_payload(setup):
    message, worker, api = setup
    job = claim(api)
    assert job["message_id"] == message.pk
    assert job["conversation_id"] == "conv-1"
    assert job["agent_key"] == "alpha"
    assert job["attempt"] == 1
    assert job["payload"]["message_text"] == "hi there"
    message.refresh_from_db()
    assert message.status == Message.PROCESSING and message.lease_id == job["lease_id"]
    worker.refresh_from_db()
    assert worker.assigned_conversation.conversation_id == "conv-1"
    assert claim(api) is None  # one job per conversation at a time


def test_heartbeat_complete_cycle(setup):
    message, worker, api = setup
    job = claim(api)
    path = f"{API}/jobs/{job['message_id']}"
    response = api.post(f"{path}/heartbeat/", {"lease_id": job["lease_id"]}, format="json")
    assert response.status_code == 200 and response.json()["lease_expires_at"]
    response = api.post(f"{path}/complete/", {"lease_id": job["lease_id"]}, format="json")
    assert response.json() == {"status": "done"}
    message.refresh_from_db()
    assert message.status == Message.DONE and message.completed_at
    worker.refresh_from_db()
    assert worker.load == 0 and worker.scheduled_shutdown_at is not None
    # Done means done: a second completion is a lost lease and changes nothing.
    response = api.post(f"{path}/complete/", {"lease_id": job["lease_id"]}, format="json")
    assert response.status_code == 409 and response.json()["error"] == "lease_lost"


@pytest.mark.parametrize("action", ["heartbeat", "complete", "delivered", "fail"])
def test_wrong_lease_is_409_and_changes_nothing(setup, action):
    message, worker, api = setup
    job = claim(api)
    before = Message.objects.get(pk=job["message_id"])
    body = {"lease_id": "not-the-lease", "error": "x"}
    response = api.post(f"{API}/jobs/{job['message_id']}/{action}/", body, format="json")
    assert response.status_code == 409
    assert response.json()["error"] == "lease_lost"
    after = Message.objects.get(pk=job["message_id"])
    assert (after.status, after.attempts, after.lease_expires_at, after.delivered_at) == (
        before.status,
        before.attempts,
        before.lease_expires_at,
        before.delivered_at,
    )


def test_foreign_worker_cannot_use_lease(setup, make_worker, worker_api):
    message, worker, api = setup
    job = claim(api)
    _, other_token = make_worker("w-other")
    response = worker_api(other_token).post(
        f"{API}/jobs/{job['message_id']}/complete/", {"lease_id": job["lease_id"]}, format="json"
    )
    assert response.status_code == 409
    assert Message.objects.get(pk=job["message_id"]).status == Message.PROCESSING


def test_expired_lease_heartbeat_is_409(setup, runtime_config):
    message, worker, api = setup
    job = claim(api)
    expires = dt.datetime.fromisoformat(job["lease_expires_at"])
    with time_machine.travel(expires, tick=False):  # expiring exactly now counts as expired
        response = api.post(
            f"{API}/jobs/{job['message_id']}/heartbeat/",
            {"lease_id": job["lease_id"]},
            format="json",
        )
    assert response.status_code == 409
    with time_machine.travel(expires - dt.timedelta(seconds=1), tick=False):
        response = api.post(
            f"{API}/jobs/{job['message_id']}/heartbeat/",
            {"lease_id": job["lease_id"]},
            format="json",
        )
    assert response.status_code == 200


def test_fail_requeues_with_backoff_then_dead_letters(setup, runtime_config):
    message, worker, api = setup
    Message.objects.filter(pk=message.pk).update(max_attempts=2)
    job = claim(api)
    response = api.post(
        f"{API}/jobs/{job['message_id']}/fail/",
        {"lease_id": job["lease_id"], "error": "boom"},
        format="json",
    )
    body = response.json()
    assert body["status"] == "queued" and body["next_attempt_at"]
    message.refresh_from_db()
    delay = (message.scheduled_for - timezone.now()).total_seconds()
    assert 0.5 < delay <= 1.1 + 0.01  # base 1 s plus up to 10 % jitter
    assert message.last_error == "boom" and message.attempts == 1
    with time_machine.travel(message.scheduled_for + dt.timedelta(seconds=1), tick=False):
        job = claim(api)
        assert job["attempt"] == 2
        response = api.post(
            f"{API}/jobs/{job['message_id']}/fail/",
            {"lease_id": job["lease_id"], "error": "again"},
            format="json",
        )
    assert response.json() == {"status": "dead_letter", "next_attempt_at": None}
    message.refresh_from_db()
    assert message.status == Message.DEAD_LETTER and message.dead_lettered_at


def test_delivered_is_recorded_once(setup):
    message, worker, api = setup
    job = claim(api)
    path = f"{API}/jobs/{job['message_id']}/delivered/"
    first = api.post(path, {"lease_id": job["lease_id"]}, format="json").json()["delivered_at"]
    second = api.post(path, {"lease_id": job["lease_id"]}, format="json").json()["delivered_at"]
    assert first == second


def test_bad_bodies_are_400_with_fields(setup):
    message, worker, api = setup
    response = api.post(f"{API}/jobs/{message.pk}/heartbeat/", {}, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "lease_id" in response.json()["fields"]
    response = api.post(f"{API}/claim/", "not json", content_type="application/json")
    assert response.status_code == 400


def test_control_refreshes_liveness_and_says_stop_when_draining(setup):
    message, worker, api = setup
    Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now() - dt.timedelta(hours=1))
    response = api.post(f"{API}/control/", {}, format="json")
    assert response.json() == {"should_stop": False, "reason": None, "status": "active"}
    worker.refresh_from_db()
    assert timezone.now() - worker.heartbeat_at < dt.timedelta(seconds=5)
    Worker.objects.filter(pk=worker.pk).update(status="draining", status_reason="idle")
    body = api.post(f"{API}/control/", {}, format="json").json()
    assert body["should_stop"] is True and body["status"] == "draining"


def test_control_says_stop_past_scheduled_shutdown(setup):
    message, worker, api = setup
    Worker.objects.filter(pk=worker.pk).update(scheduled_shutdown_at=timezone.now())
    assert api.post(f"{API}/control/", {}, format="json").json()["should_stop"] is True


def test_hydration_only_for_lease_holder(setup, make_worker, worker_api):
    message, worker, api = setup
    import_secret(
        "telegram.botToken.alpha", "123:SECRET-TOKEN", actor="t", metadata={"bot_identity": "123"}
    )
    job = claim(api)
    path = f"{API}/jobs/{job['message_id']}/hydration/"
    bundle = api.get(path, {"lease_id": job["lease_id"]}).json()
    assert bundle["telegram_bot_token"] == "123:SECRET-TOKEN"
    assert bundle["bot_identity"] == "123"
    assert bundle["conversation"]["history"] == []
    _, other = make_worker("w-intruder")
    response = worker_api(other).get(path, {"lease_id": job["lease_id"]})
    assert response.status_code == 409
    assert b"SECRET-TOKEN" not in response.content
    assert api.get(path, {"lease_id": "wrong"}).status_code == 409


def test_append_history_is_idempotent_per_job(setup):
    message, worker, api = setup
    job = claim(api)
    body = {
        "lease_id": job["lease_id"],
        "message_id": job["message_id"],
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
    }
    path = f"{API}/conversations/conv-1/messages/"
    assert api.post(path, body, format="json").json() == {"appended": 2}
    assert api.post(path, body, format="json").json() == {"appended": 0}
    assert ConversationEntry.objects.count() == 2
    bad = {**body, "messages": [{"role": "robot", "content": "x"}]}
    assert api.post(path, bad, format="json").status_code == 400


def test_snapshot_flow_and_checksum(setup, worker_api, make_worker):
    message, worker, api = setup
    claim(api)
    prep = api.post(
        f"{API}/snapshots/",
        {
            "workspace_id": "default",
            "agent_key": "alpha",
            "conversation_id": "conv-1",
            "reason": "manual",
        },
        format="json",
    )
    assert prep.status_code == 201
    snapshot_id, upload_url = prep.json()["snapshot_id"], prep.json()["upload_url"]
    data = b"archive-bytes" * 100
    put = api.put(
        upload_url.replace("http://testserver", ""), data, content_type="application/octet-stream"
    )
    assert put.json() == {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
    bad = api.post(
        f"{API}/snapshots/{snapshot_id}/finalize/",
        {"sha256": "0" * 64, "size_bytes": len(data)},
        format="json",
    )
    assert bad.status_code == 400 and bad.json()["error"] == "checksum_mismatch"
    ok = api.post(
        f"{API}/snapshots/{snapshot_id}/finalize/",
        {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)},
        format="json",
    )
    assert ok.json() == {"status": "ready"}
    latest = api.get(
        f"{API}/snapshots/latest/",
        {"workspace_id": "default", "agent_key": "alpha", "conversation_id": "conv-1"},
    ).json()
    assert latest["snapshot"]["snapshot_id"] == snapshot_id
    download = latest["snapshot"]["download_url"].replace("http://testserver", "")
    assert b"".join(api.get(download).streaming_content) == data
    _, stranger = make_worker("w-stranger")
    assert worker_api(stranger).get(download).status_code == 403


def test_latest_snapshot_skips_failed_newest(setup):
    from workers.models import DataSnapshot

    message, worker, api = setup
    now = timezone.now()
    ready = DataSnapshot.objects.create(
        agent_key="alpha",
        worker_id="w-a",
        conversation_id="conv-1",
        reason="drain",
        status="ready",
        created_at=now - dt.timedelta(minutes=5),
        sha256="a" * 64,
        size_bytes=1,
    )
    DataSnapshot.objects.create(
        agent_key="alpha",
        worker_id="w-a",
        conversation_id="conv-1",
        reason="drain",
        status="failed",
        created_at=now,
    )
    DataSnapshot.objects.create(  # another conversation's newer snapshot never leaks in
        agent_key="alpha",
        worker_id="w-a",
        conversation_id="conv-2",
        reason="drain",
        status="ready",
        created_at=now,
        sha256="b" * 64,
        size_bytes=1,
    )
    query = {"workspace_id": "default", "agent_key": "alpha", "conversation_id": "conv-1"}
    assert api.get(f"{API}/snapshots/latest/", query).json()["snapshot"]["snapshot_id"] == ready.pk


def test_openapi_schema_generates(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert b"/api/v1/worker/claim/" in response.content
