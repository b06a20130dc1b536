"""Worker REST API: every endpoint's happy path and its 400/401/403/404/409 answers."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
import time_machine
from django.utils import timezone

from agents.models import AgentProfile, ConversationEntry
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
    assert response.json() == {"status": "done", "outbox": []}
    message.refresh_from_db()
    assert message.status == Message.DONE and message.completed_at
    worker.refresh_from_db()
    assert worker.load == 0 and worker.scheduled_shutdown_at is not None
    # A retried complete (lost answer) gets the first answer again (SPEC §6.3) and changes
    # nothing; any other lease on the done job is a lost lease.
    completed_at = Message.objects.get(pk=message.pk).completed_at
    response = api.post(f"{path}/complete/", {"lease_id": job["lease_id"]}, format="json")
    assert response.status_code == 200 and response.json() == {"status": "done", "outbox": []}
    assert Message.objects.get(pk=message.pk).completed_at == completed_at
    response = api.post(f"{path}/complete/", {"lease_id": "other"}, format="json")
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


def control(api):
    response = api.post(f"{API}/control/", {}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_control_refreshes_liveness_of_a_live_worker(setup, runtime_config):
    message, worker, api = setup
    almost = dt.timedelta(seconds=runtime_config.stale_after_seconds - 5)
    Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now() - almost)
    assert control(api) == {
        "should_stop": False,
        "reason": None,
        "status": "active",
        "conversation_id": None,
    }
    worker.refresh_from_db()
    assert timezone.now() - worker.heartbeat_at < dt.timedelta(seconds=5)


def test_an_idle_worker_polling_control_is_never_taken_for_dead(
    setup, runtime_config, make_worker, worker_api
):
    """Polling every 2 s for three stale windows: never told to stop, its conversation kept."""
    message, worker, api = setup
    job = claim(api)
    done = api.post(
        f"{API}/jobs/{job['message_id']}/complete/", {"lease_id": job["lease_id"]}, format="json"
    )
    assert done.status_code == 200
    Worker.objects.filter(pk=worker.pk).update(scheduled_shutdown_at=None)
    start = timezone.now()
    polls = 3 * runtime_config.stale_after_seconds // 2
    for n in range(1, polls + 1):
        with time_machine.travel(start + dt.timedelta(seconds=2 * n), tick=False):
            assert control(api)["should_stop"] is False
    with time_machine.travel(start + dt.timedelta(seconds=2 * polls + 1), tick=False):
        from workers.queue import enqueue_message

        enqueue_message(
            conversation_id="conv-1",
            agent_key="alpha",
            payload={"provider": "telegram", "provider_user_id": "u", "message_text": "x"},
        )
        _, other_token = make_worker("w-rival", heartbeat_at=timezone.now())
        assert claim(worker_api(other_token)) is None  # still this worker's conversation
        assert claim(api)["conversation_id"] == "conv-1"


def test_control_says_stop_to_a_stale_worker_and_does_not_revive_it(setup, runtime_config):
    message, worker, api = setup
    stale_at = timezone.now() - dt.timedelta(seconds=runtime_config.stale_after_seconds + 1)
    Worker.objects.filter(pk=worker.pk).update(heartbeat_at=stale_at)
    assert control(api) == {
        "should_stop": True,
        "reason": "heartbeat stale",
        "status": "active",
        "conversation_id": None,
    }
    # Nor does a claim bring it back: it gets nothing and stays stale.
    assert claim(api) is None
    worker.refresh_from_db()
    assert worker.heartbeat_at == stale_at
    assert Message.objects.get(pk=message.pk).status == Message.QUEUED
    assert control(api)["should_stop"] is True


def test_control_stale_boundary_is_exactly_stale_after(setup, runtime_config):
    message, worker, api = setup
    now = timezone.now()
    Worker.objects.filter(pk=worker.pk).update(heartbeat_at=now)
    window = dt.timedelta(seconds=runtime_config.stale_after_seconds)
    with time_machine.travel(now + window, tick=False):  # exactly stale_after: still live
        assert control(api)["should_stop"] is False
    with time_machine.travel(now + 2 * window + dt.timedelta(seconds=1), tick=False):
        assert control(api)["reason"] == "heartbeat stale"


@pytest.mark.parametrize("status", ["draining", "stopping"])
def test_control_says_stop_when_not_active(setup, status):
    message, worker, api = setup
    Worker.objects.filter(pk=worker.pk).update(status=status, status_reason="idle timeout")
    assert control(api) == {
        "should_stop": True,
        "reason": "idle timeout",
        "status": status,
        "conversation_id": None,
    }
    worker.refresh_from_db()
    assert timezone.now() - worker.heartbeat_at < dt.timedelta(seconds=5)


def test_control_says_stop_past_scheduled_shutdown(setup):
    message, worker, api = setup
    soon = timezone.now() + dt.timedelta(seconds=30)
    Worker.objects.filter(pk=worker.pk).update(scheduled_shutdown_at=soon)
    assert control(api)["should_stop"] is False
    with time_machine.travel(soon, tick=False):
        Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now())
        assert control(api) == {
            "should_stop": True,
            "reason": "idle timeout",
            "status": "active",
            "conversation_id": None,
        }


def test_a_stopped_workers_token_is_revoked(setup):
    from workers.lifecycle import transition_worker

    message, worker, api = setup
    assert control(api)["should_stop"] is False
    transition_worker(worker, Worker.STOPPED, reason="test")
    response = api.post(f"{API}/control/", {}, format="json")
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"


def test_hydration_only_for_lease_holder(setup, make_worker, worker_api):
    message, worker, api = setup
    import_secret(
        "telegram.botToken.alpha", "123:SECRET-TOKEN", actor="t", metadata={"bot_identity": "123"}
    )
    AgentProfile.objects.filter(agent_key="alpha").update(delivery="worker")
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


def append_body(job, messages):
    """The body of POST conversations/<id>/messages/ for the claimed ``job``."""
    return {"lease_id": job["lease_id"], "message_id": job["message_id"], "messages": messages}


HI = {"role": "user", "content": "hi"}


def test_append_history_is_idempotent_per_job(setup):
    message, worker, api = setup
    job = claim(api)
    body = append_body(job, [HI, {"role": "assistant", "content": "yo"}])
    path = f"{API}/conversations/conv-1/messages/"
    assert api.post(path, body, format="json").json() == {"appended": 2}
    assert api.post(path, body, format="json").json() == {"appended": 0}  # a retried request
    assert ConversationEntry.objects.count() == 2
    # A different batch for the same job is new history, not a retry.
    more = {**body, "messages": [{"role": "tool", "content": "t", "at": "2030-01-01T00:00:00Z"}]}
    assert api.post(path, more, format="json").json() == {"appended": 1}
    entries = list(ConversationEntry.objects.order_by("id").values_list("role", "content"))
    assert entries == [("user", "hi"), ("assistant", "yo"), ("tool", "t")]
    assert ConversationEntry.objects.get(role="tool").at == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": []},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": "x", "at": "yesterday"}]},
        {"message_id": "one"},
        {"lease_id": ""},
    ],
)
def test_append_bad_body_is_400_and_stores_nothing(setup, change):
    message, worker, api = setup
    job = claim(api)
    body = {**append_body(job, [HI]), **change}
    response = api.post(f"{API}/conversations/conv-1/messages/", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request" and response.json()["fields"]
    assert not ConversationEntry.objects.exists()


def test_append_to_another_conversation_is_400(setup, enqueue):
    message, worker, api = setup
    enqueue("conv-2", "alpha")
    job = claim(api)
    body = append_body(job, [HI])
    response = api.post(f"{API}/conversations/conv-2/messages/", body, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "detail": "message_id does not belong to this conversation.",
    }
    assert not ConversationEntry.objects.exists()


def test_append_without_the_live_lease_is_409(setup, make_worker, worker_api):
    message, worker, api = setup
    job = claim(api)
    body = append_body(job, [HI])
    path = f"{API}/conversations/conv-1/messages/"
    _, other_token = make_worker("w-other", heartbeat_at=timezone.now())
    expires = dt.datetime.fromisoformat(job["lease_expires_at"])
    answers = [
        api.post(path, {**body, "lease_id": "not-the-lease"}, format="json"),
        worker_api(other_token).post(path, body, format="json"),
    ]
    with time_machine.travel(expires, tick=False):
        answers.append(api.post(path, body, format="json"))
    for response in answers:
        assert response.status_code == 409
        assert response.json()["error"] == "lease_lost"
    assert not ConversationEntry.objects.exists()


def _prepare_snapshot(api):
    """Claim conv-1's job (so this worker may snapshot it), then prepare a snapshot of it."""
    claim(api)
    body = {
        "workspace_id": "default",
        "agent_key": "alpha",
        "conversation_id": "conv-1",
        "reason": "manual",
    }
    return api.post(f"{API}/snapshots/", body, format="json")


def _prepared_upload(api):
    prep = _prepare_snapshot(api)
    return prep.json()["snapshot_id"], prep.json()["upload_url"].replace("http://testserver", "")


def test_snapshot_flow_and_checksum(setup, worker_api, make_worker):
    message, worker, api = setup
    prep = _prepare_snapshot(api)
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


def test_openapi_schema_documents_every_worker_endpoint(admin_client):
    # Staff only (or a worker token): see tests/test_production_settings.py.
    response = admin_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = response.json()
    paths = set(schema["paths"])
    for path in [
        "/api/v1/worker/control/",
        "/api/v1/worker/claim/",
        "/api/v1/worker/jobs/{message_id}/hydration/",
        "/api/v1/worker/jobs/{message_id}/heartbeat/",
        "/api/v1/worker/jobs/{message_id}/complete/",
        "/api/v1/worker/jobs/{message_id}/fail/",
        "/api/v1/worker/jobs/{message_id}/delivered/",
        "/api/v1/worker/conversations/{conversation_id}/messages/",
        "/api/v1/worker/snapshots/",
        "/api/v1/worker/snapshots/{snapshot_id}/upload/",
        "/api/v1/worker/snapshots/{snapshot_id}/finalize/",
        "/api/v1/worker/snapshots/{snapshot_id}/fail/",
        "/api/v1/worker/snapshots/{snapshot_id}/reject/",
        "/api/v1/worker/snapshots/latest/",
        "/api/v1/worker/snapshots/{snapshot_id}/download/",
        "/api/v1/worker/attachments/{attachment_id}/download/",
    ]:
        assert path in paths, path
    assert "put" in schema["paths"]["/api/v1/worker/snapshots/{snapshot_id}/upload/"]
    heartbeat = schema["paths"]["/api/v1/worker/jobs/{message_id}/heartbeat/"]["post"]
    assert "requestBody" in heartbeat
    reject = schema["paths"]["/api/v1/worker/snapshots/{snapshot_id}/reject/"]["post"]
    assert "requestBody" in reject
    latest = schema["paths"]["/api/v1/worker/snapshots/latest/"]["get"]
    assert "before" in {parameter["name"] for parameter in latest["parameters"]}


def test_sqlite_claims_are_serialised_by_immediate_transactions(db):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL uses row locks (see test_concurrency)")
    assert connection.settings_dict["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_snapshot_upload_streams_past_the_in_memory_body_limit(setup, settings):
    # Django reads at most DATA_UPLOAD_MAX_MEMORY_SIZE into memory (small, for the admin's
    # unauthenticated login form); an archive larger than that still streams to storage.
    from workers.models import DataSnapshot

    message, worker, api = setup
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    snapshot_id, upload_url = _prepared_upload(api)
    data = bytes(range(256)) * 64  # 16 KiB
    put = api.put(upload_url, data, content_type="application/octet-stream")
    assert put.status_code == 200, put.content
    assert put.json() == {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
    assert DataSnapshot.objects.get(pk=snapshot_id).archive.read() == data


def test_snapshot_upload_past_the_snapshot_limit_is_413_and_stores_nothing(setup, settings):
    from workers.models import DataSnapshot

    message, worker, api = setup
    settings.AGENT_FACTORY_SNAPSHOT_MAX_BYTES = 4096
    snapshot_id, upload_url = _prepared_upload(api)
    storage_dir = DataSnapshot._meta.get_field("archive").storage.location
    before = {p for p in Path(storage_dir).rglob("*") if p.is_file()}
    put = api.put(upload_url, b"x" * 5000, content_type="application/octet-stream")
    assert put.status_code == 413 and put.json()["error"] == "too_large", put.content
    snapshot = DataSnapshot.objects.get(pk=snapshot_id)
    assert (
        snapshot.status == DataSnapshot.UPLOADING and not snapshot.archive and not snapshot.sha256
    )
    after = {p for p in Path(storage_dir).rglob("*") if p.is_file()}
    assert after == before  # the partial file was removed
    # A retry within the limit still works.
    ok = api.put(upload_url, b"y" * 100, content_type="application/octet-stream")
    assert ok.status_code == 200 and ok.json()["size_bytes"] == 100


def test_json_body_past_the_memory_limit_is_refused_with_the_error_shape(setup, settings):
    message, worker, api = setup
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = api.post(f"{API}/claim/", {"conversation_id": "c" * 5000}, format="json")
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large" and response.json()["detail"]
    assert Message.objects.get(pk=message.pk).status == Message.QUEUED
