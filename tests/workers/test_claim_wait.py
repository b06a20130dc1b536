"""Long-poll claims (SPEC §7): ``wait_seconds`` holds an idle claim until work arrives."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from django.utils import timezone

from workers import claim_wait
from workers.models import Worker
from workers.queue import enqueue_message

API = "/api/v1/worker"


def claim(api, **body):
    started = time.monotonic()
    response = api.post(f"{API}/claim/", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()["job"], time.monotonic() - started


def test_an_idle_claim_waits_then_answers_no_job(alpha_agent, make_worker, worker_api):
    _, token = make_worker("w-wait", heartbeat_at=timezone.now())
    job, elapsed = claim(worker_api(token), wait_seconds=0.6)
    assert job is None and elapsed >= 0.55


def test_wait_seconds_is_capped_at_25(alpha_agent, make_worker, worker_api):
    _, token = make_worker("w-cap", heartbeat_at=timezone.now())
    response = worker_api(token).post(f"{API}/claim/", {"wait_seconds": 26}, format="json")
    assert response.status_code == 400


def test_a_worker_that_is_no_longer_active_stops_waiting_at_once(
    alpha_agent, make_worker, worker_api
):
    worker, token = make_worker("w-drain", heartbeat_at=timezone.now())
    Worker.objects.filter(pk=worker.pk).update(status=Worker.DRAINING)
    job, elapsed = claim(worker_api(token), wait_seconds=5)
    assert job is None and elapsed < 1.0


def test_a_worker_whose_row_was_deleted_while_waiting_gets_no_job(alpha_agent, make_worker):
    worker, _ = make_worker("w-gone", heartbeat_at=timezone.now())
    Worker.objects.filter(pk=worker.pk).delete()  # the request still holds the loaded row
    assert claim_wait.claim_waiting(worker, conversation_id=None, wait_seconds=5) is None


@pytest.mark.django_db(transaction=True)
def test_a_new_message_wakes_the_waiting_claim_at_once(
    alpha_agent, make_worker, worker_api, monkeypatch
):
    # Without a wake-up the waiter would only find the job at its next recheck.
    monkeypatch.setattr(claim_wait, "RECHECK", 4.0)
    _, token = make_worker("w-woken", heartbeat_at=timezone.now())

    def enqueue_later():
        time.sleep(0.4)
        try:
            enqueue_message(
                conversation_id="conv-w",
                agent_key="alpha",
                payload={"provider": "api", "provider_user_id": "u", "message_text": "hi"},
            )
        finally:
            connection.close()

    thread = threading.Thread(target=enqueue_later)
    thread.start()
    job, elapsed = claim(worker_api(token), wait_seconds=10)
    thread.join()
    assert job is not None and job["payload"]["message_text"] == "hi"
    assert 0.35 <= elapsed < 2.0


def test_the_reference_worker_long_polls_when_configured(tmp_path):
    import json

    import responses

    from workers.runtime.api_client import WorkerApiClient
    from workers.runtime.runner import WorkerRuntime, WorkerSettings

    settings = WorkerSettings(
        api_url="http://srv", token="t", worker_id="w", data_dir=tmp_path, claim_wait_seconds=20
    )
    client = WorkerApiClient("http://srv", "t")
    runtime = WorkerRuntime(settings, client, lambda ctx: "x")
    with responses.RequestsMock() as mocked:
        mocked.post("http://srv/api/v1/worker/control/", json={"should_stop": False})
        claim_call = mocked.post("http://srv/api/v1/worker/claim/", json={"job": None})

        def stop_after_claim(*args):
            runtime.request_stop()
            return False

        runtime.stop_requested.wait = stop_after_claim
        runtime.run()
    assert json.loads(claim_call.calls[0].request.body) == {"wait_seconds": 20}
    assert claim_call.calls[0].request.req_kwargs["timeout"][1] >= 20


def test_a_worker_moved_to_another_conversation_stops_waiting_at_once(
    alpha_agent, make_worker, worker_api
):
    from agents.models import Conversation

    worker, token = make_worker("w-moved", heartbeat_at=timezone.now())
    moved_to = Conversation.objects.create(conversation_id="conv-new", agent=alpha_agent)
    Worker.objects.filter(pk=worker.pk).update(assigned_conversation=moved_to)
    job, elapsed = claim(worker_api(token), conversation_id="conv-old", wait_seconds=5)
    assert job is None and elapsed < 1.0


def test_a_stop_signal_leaves_a_waiting_claim_at_once(tmp_path):
    import signal
    import threading as th

    from workers.runtime.runner import EXIT_OK, WorkerRuntime, WorkerSettings

    class SlowClaims:
        claims = 0

        def control(self):
            return {"should_stop": False}

        def claim(self, conversation_id=None, wait_seconds=0):
            self.claims += 1
            assert wait_seconds == 20
            time.sleep(30)  # the server holding the request

        def skills_manifest(self, *args, **kwargs):
            return {"skills": []}

    settings = WorkerSettings(
        api_url="http://srv", token="t", worker_id="w", data_dir=tmp_path, claim_wait_seconds=20
    )
    runtime = WorkerRuntime(settings, SlowClaims(), lambda ctx: "x")
    previous = signal.signal(signal.SIGUSR1, runtime.request_stop)
    try:
        th.Timer(0.3, lambda: signal.pthread_kill(th.main_thread().ident, signal.SIGUSR1)).start()
        started = time.monotonic()
        assert runtime.run() == EXIT_OK
        assert time.monotonic() - started < 5
    finally:
        signal.signal(signal.SIGUSR1, previous)
