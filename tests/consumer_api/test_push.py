"""Push jobs and broadcasts through the consumer API (SPEC §14, §15)."""

from __future__ import annotations

import pytest

from agents.pushing.models import PushBroadcast, PushJob
from tests.consumer_api.conftest import bind

pytestmark = pytest.mark.django_db

JOB = {
    "consumer_user_id": "u1",
    "agent_key": "alpha",
    "text": "Good morning",
    "periodicity": "weekly",
    "timezone": "Europe/Rome",
    "schedule": {"weekday": 1, "time": "08:30"},
}


def test_push_job_create_read_patch_delete(world, rw):
    response = rw.post("/api/v1/push-jobs/", JOB, format="json")
    assert response.status_code == 201, response.json()
    job = response.json()
    assert job["schedule"] == {"weekday": 1, "time": "08:30"}
    assert job["next_run_at"].endswith("Z")
    assert rw.get(f"/api/v1/push-jobs/{job['id']}/").json()["text"] == "Good morning"
    assert [
        j["id"] for j in rw.get("/api/v1/push-jobs/?consumer_user_id=u1").json()["results"]
    ] == [job["id"]]
    patched = rw.patch(f"/api/v1/push-jobs/{job['id']}/", {"enabled": False}, format="json")
    assert patched.status_code == 200
    assert (patched.json()["enabled"], patched.json()["next_run_at"]) == (False, None)
    assert patched.json()["schedule"] == {"weekday": 1, "time": "08:30"}
    assert rw.delete(f"/api/v1/push-jobs/{job['id']}/").status_code == 204
    assert not PushJob.objects.exists()


def test_push_job_field_errors(world, rw):
    response = rw.post("/api/v1/push-jobs/", {**JOB, "periodicity": "hourly"}, format="json")
    assert response.status_code == 400
    assert "periodicity" in response.json()["fields"]
    response = rw.post(
        "/api/v1/push-jobs/", {**JOB, "schedule": {"weekday": 9, "time": "08:30"}}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["fields"]["non_field_errors"]
    assert not PushJob.objects.exists()


def test_push_job_trigger(world, rw):
    bind(rw, "u1", "alpha", "55")
    job = rw.post("/api/v1/push-jobs/", JOB, format="json").json()
    response = rw.post(f"/api/v1/push-jobs/{job['id']}/trigger/")
    assert response.status_code == 202
    assert response.json()["run_key"].startswith("manual:")
    again = rw.post(f"/api/v1/push-jobs/{job['id']}/trigger/")
    assert again.status_code == 400  # once per minute


def test_broadcast_to_the_keys_scope_and_its_status(world, make_key, api):
    client = api(make_key(agents=["alpha"]).key)
    bind(client, "u1", "alpha", "55")
    bind(client, "u2", "alpha", "56")
    everyone = api(make_key().key)
    bind(everyone, "u3", "beta", "57")  # outside the narrowed key's scope
    response = client.post("/api/v1/broadcasts/", {"text": "news"}, format="json")
    assert response.status_code == 202
    assert response.json()["targets"] == 2
    assert PushBroadcast.objects.get().agent_keys == ["alpha"]
    detail = client.get(f"/api/v1/broadcasts/{response.json()['broadcast_id']}/").json()
    assert sorted(t["consumer_user_id"] for t in detail["targets"]) == ["u1", "u2"]
    assert sum(detail["counts"].values()) == 2
    refused = client.post(
        "/api/v1/broadcasts/", {"text": "news", "agent_keys": ["beta"]}, format="json"
    )
    assert refused.status_code == 404
    assert client.post("/api/v1/broadcasts/", {}, format="json").json()["fields"]["text"]


def test_every_create_honours_an_idempotency_key(world, rw):
    bind(rw, "u1", "alpha", "55")
    first = rw.post(
        "/api/v1/broadcasts/", {"text": "news"}, format="json", HTTP_IDEMPOTENCY_KEY="b-1"
    )
    again = rw.post(
        "/api/v1/broadcasts/", {"text": "news"}, format="json", HTTP_IDEMPOTENCY_KEY="b-1"
    )
    assert first.json() == again.json() and again.status_code == 202
    assert PushBroadcast.objects.count() == 1
    for _ in range(2):
        rw.post("/api/v1/push-jobs/", JOB, format="json", HTTP_IDEMPOTENCY_KEY="j-1")
    assert PushJob.objects.count() == 1
    pairing = {"consumer_user_id": "u9", "agent_key": "alpha"}
    codes = {
        rw.post("/api/v1/pairings/", pairing, format="json", HTTP_IDEMPOTENCY_KEY="p-1").json()[
            "code"
        ]
        for _ in range(2)
    }
    assert len(codes) == 1
