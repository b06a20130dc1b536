"""Claim, heartbeat and complete look the token's owner up only when their own statements
did not find it (``WorkerView.defers_token_lookup``, ``WorkerView.by_token``). Seen from outside,
nothing changes: an unknown or revoked token answers the same 401 as on any endpoint, before
any other error the request has, and a landed call names its worker in the log context."""

from __future__ import annotations

import pytest
from django.utils import timezone

from agents import log_context
from workers.tokens import revoke_worker_token

API = "/api/v1/worker"


@pytest.fixture
def leased(alpha_agent, enqueue, make_worker, worker_api):
    """A job claimed by w-a: (its id, its lease, w-a, w-a's token)."""
    enqueue("c-1", "alpha", "hello")
    worker, token = make_worker("w-a", heartbeat_at=timezone.now())
    job = worker_api(token).post(f"{API}/claim/", {}, format="json").json()["job"]
    return job["message_id"], job["lease_id"], worker, token


def _answer(response) -> tuple:
    return response.status_code, response.json(), response.headers.get("WWW-Authenticate")


@pytest.mark.parametrize("call", ["claim", "heartbeat", "complete"])
@pytest.mark.parametrize(
    "body", ["the lease", "a lost lease", "no lease", "not JSON"], ids=lambda b: b.replace(" ", "-")
)
@pytest.mark.parametrize("token", ["revoked", "unknown"])
def test_a_bad_token_is_the_same_401_before_any_other_error(leased, worker_api, call, body, token):
    message_id, lease_id, worker, raw = leased
    reference = _answer(worker_api("wk_0_0").post(f"{API}/control/", {}, format="json"))
    if token == "revoked":
        revoke_worker_token(worker)
        reference = _answer(worker_api(raw).post(f"{API}/control/", {}, format="json"))
    else:
        raw = raw.rsplit("_", 1)[0] + "_not-the-secret"
    path = f"{API}/jobs/{message_id}/{call}/"
    data = {"the lease": {"lease_id": lease_id}, "a lost lease": {"lease_id": "x"}}
    if call == "claim":
        path = f"{API}/claim/"
        data = {"the lease": {"conversation_id": "c-1"}, "a lost lease": {}}
        data["no lease"] = {"wait_seconds": "soon"}
    api = worker_api(raw)
    if body == "not JSON":
        response = api.post(path, "{not json", content_type="application/json")
    else:
        response = api.post(path, data.get(body, {}), format="json")
    assert reference[0] == 401 and reference[2] == "Bearer"
    assert _answer(response) == reference


@pytest.mark.parametrize("call", ["heartbeat", "complete"])
def test_the_holder_still_gets_its_other_errors(leased, worker_api, call):
    message_id, _, _, raw = leased
    path = f"{API}/jobs/{message_id}/{call}/"
    lost = worker_api(raw).post(path, {"lease_id": "x"}, format="json")
    assert lost.status_code == 409 and lost.json()["error"] == "lease_lost"
    invalid = worker_api(raw).post(path, {}, format="json")
    assert invalid.status_code == 400 and "lease_id" in invalid.json()["fields"]


def test_a_claim_heartbeat_and_complete_by_token_name_their_worker(
    leased, worker_api, monkeypatch, enqueue
):
    message_id, lease_id, _, raw = leased
    seen = []
    real_bind = log_context.bind

    def bind(**ids):
        real_bind(**ids)
        seen.append(log_context.current().get("worker_id"))

    monkeypatch.setattr(log_context, "bind", bind)
    for call in ("heartbeat", "complete"):
        seen.clear()
        response = worker_api(raw).post(
            f"{API}/jobs/{message_id}/{call}/", {"lease_id": lease_id}, format="json"
        )
        assert response.status_code == 200, response.content
        assert "w-a" in seen
    # A repeated complete (its answer was lost) still gets the first answer.
    again = worker_api(raw).post(
        f"{API}/jobs/{message_id}/complete/", {"lease_id": lease_id}, format="json"
    )
    assert again.status_code == 200 and again.json() == {"status": "done", "outbox": []}
    # The fixture's claim made w-a warm on c-1: its next claim is decided by token.
    enqueue("c-1", "alpha", "again")
    seen.clear()
    claimed = worker_api(raw).post(f"{API}/claim/", {}, format="json")
    assert claimed.status_code == 200 and claimed.json()["job"] and "w-a" in seen
