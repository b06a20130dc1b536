"""The reference worker's job handling, with a fake API client and a fake Telegram."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import responses

from workers.runtime.api_client import LeaseLostError, WorkerApiClient
from workers.runtime.runner import WorkerRuntime, WorkerSettings


class FakeApi:
    def __init__(self, *, heartbeat_lost=False):
        self.calls: list[str] = []
        self.heartbeat_lost = heartbeat_lost

    def hydration(self, job):
        self.calls.append("hydration")
        return {"telegram_bot_token": "1:TOKEN-xxxxxxxxxx"}

    def heartbeat(self, job):
        self.calls.append("heartbeat")
        if self.heartbeat_lost:
            raise LeaseLostError(409, "lease_lost", "gone")

    def delivered(self, job):
        self.calls.append("delivered")

    def append_messages(self, job, messages):
        self.calls.append("append")

    def complete(self, job, usage=None):
        self.calls.append("complete")

    def fail(self, job, error, usage=None):
        self.calls.append(f"fail:{error}")

    def latest_snapshot(self, *args):
        return None


class FakeTelegram:
    sent: list = []

    def __init__(self, token):
        self.token = token

    def send_message(self, chat_id, text):
        FakeTelegram.sent.append((chat_id, text))


def job(**extra):
    return {
        "message_id": 7,
        "lease_id": "L",
        "conversation_id": "c",
        "agent_key": "alpha",
        "payload": {
            "provider": "telegram",
            "message_text": "hi",
            "metadata": {"telegram_chat_id": "55"},
        },
        **extra,
    }


def runtime(api, handler, tmp_path, heartbeat_seconds=10.0):
    FakeTelegram.sent = []
    settings = WorkerSettings(
        api_url="http://x",
        token="t",
        worker_id="w",
        data_dir=tmp_path,
        heartbeat_seconds=heartbeat_seconds,
    )
    rt = WorkerRuntime(settings, api, handler, telegram_factory=FakeTelegram)
    rt.restored_for = "c"
    return rt


def test_happy_path_order(tmp_path):
    api = FakeApi()
    rt = runtime(api, lambda ctx: ctx.text.upper(), tmp_path)
    assert rt.process(job()) == "done"
    assert api.calls == ["hydration", "delivered", "append", "complete"]
    assert FakeTelegram.sent == [("55", "HI")]


def test_heartbeat_409_aborts_without_delivery(tmp_path):
    api = FakeApi(heartbeat_lost=True)
    gate = threading.Event()

    def slow(ctx):
        gate.wait(2)  # the heartbeat fires (every 0.05 s) and loses the lease meanwhile
        return "late reply"

    rt = runtime(api, slow, tmp_path, heartbeat_seconds=0.05)
    threading.Timer(0.3, gate.set).start()
    assert rt.process(job()) == "aborted"
    assert FakeTelegram.sent == []
    assert "delivered" not in api.calls and "complete" not in api.calls
    assert not any(c.startswith("fail") for c in api.calls)


def test_already_delivered_job_completes_without_sending(tmp_path):
    api = FakeApi()
    rt = runtime(api, lambda ctx: pytest.fail("handler must not run"), tmp_path)
    assert rt.process(job(delivered_at="2026-11-24T10:00:00Z")) == "redelivered"
    assert FakeTelegram.sent == [] and api.calls == ["hydration", "complete"]


def test_handler_exception_fails_the_job(tmp_path):
    api = FakeApi()

    def broken(ctx):
        raise ValueError("model unavailable")

    rt = runtime(api, broken, tmp_path)
    assert rt.process(job()) == "failed"
    assert api.calls[-1] == "fail:ValueError: model unavailable"
    assert FakeTelegram.sent == []


def test_echo_handler_writes_workspace_transcript(tmp_path):
    from workers.runtime.handlers import JobContext, echo, load_handler

    assert load_handler(None) is echo
    assert echo(JobContext(job=job(), bundle={}, data_dir=tmp_path)) == "hi"
    assert (Path(tmp_path) / "workspace" / "transcript.txt").read_text() == "hi\n"
    with pytest.raises(RuntimeError, match="Unknown handler"):
        load_handler("no.such.module.handler")


@responses.activate
def test_api_client_maps_409_and_retries_5xx():
    responses.post("http://srv/api/v1/worker/jobs/7/heartbeat/", status=502)
    responses.post(
        "http://srv/api/v1/worker/jobs/7/heartbeat/",
        status=409,
        json={"error": "lease_lost", "detail": "x"},
    )
    client = WorkerApiClient("http://srv", "tok")
    with pytest.raises(LeaseLostError):
        client.heartbeat(job())
    assert len(responses.calls) == 2
    assert responses.calls[0].request.headers["Authorization"] == "Bearer tok"


def test_snapshot_archive_round_trip_and_hash_check(tmp_path):
    from workers.runtime.archive import make_archive, restore_archive

    source = tmp_path / "src"
    (source / "workspace").mkdir(parents=True)
    (source / "workspace" / "notes.txt").write_text("state")
    (source / "skills").mkdir()
    archive = tmp_path / "snapshot.tar.gz"
    sha, _ = make_archive(source, archive)
    target = tmp_path / "dst"
    restore_archive(archive, sha, target)
    assert (target / "workspace" / "notes.txt").read_text() == "state"
    assert not (target / "skills").exists()  # skills are re-materialised, not snapshotted
    with pytest.raises(ValueError, match="SHA-256"):
        restore_archive(archive, "0" * 64, tmp_path / "other")
