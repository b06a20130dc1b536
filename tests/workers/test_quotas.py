"""Worker-side quotas (SPEC §23): history per job, snapshot prepares per worker."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from agents.models import Conversation, ConversationEntry, RuntimeConfig
from workers.models import DataSnapshot

API = "/api/v1/worker"
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
TRIPLE = {"workspace_id": "default", "agent_key": "alpha", "conversation_id": "conv-q"}


@pytest.fixture
def leased(alpha_agent, claim_as, enqueue):
    enqueue("conv-q", "alpha")
    return claim_as("w-quota")


def limits(**fields) -> None:
    config = RuntimeConfig.get()
    for name, value in fields.items():
        setattr(config, name, value)
    config.save()


def append(api, job, entries: list[dict]):
    return api.post(
        f"{API}/conversations/conv-q/messages/",
        {"lease_id": job["lease_id"], "message_id": job["message_id"], "messages": entries},
        format="json",
    )


def entries(n: int, content: str = "x", start: int = 0) -> list[dict]:
    return [{"role": "assistant", "content": f"{content}{start + i}"} for i in range(n)]


def test_history_defaults_are_those_of_the_spec(db):
    config = RuntimeConfig.get()
    assert config.history_entries_per_job == 64
    assert config.history_bytes_per_job == 1024 * 1024
    assert config.snapshot_prepares_per_minute == 5


def test_history_entry_cap_counts_every_append_of_the_job(leased):
    worker, api, job = leased
    assert append(api, job, entries(40)).json() == {"appended": 40}
    over = append(api, job, entries(25, start=40))
    assert over.status_code == 413
    body = over.json()
    assert body["error"] == "too_large"
    assert body["detail"] == (
        f"Job {job['message_id']} may append at most 64 history entries; "
        "it has 40 and this adds 25."
    )
    assert ConversationEntry.objects.count() == 40  # nothing of the refused batch
    assert append(api, job, entries(24, start=40)).json() == {"appended": 24}
    assert append(api, job, entries(1, start=64)).status_code == 413
    # A retry of the last accepted batch is still answered (and stores nothing).
    assert append(api, job, entries(24, start=40)).json() == {"appended": 0}
    assert ConversationEntry.objects.count() == 64


def test_history_byte_cap_counts_utf8_bytes(leased):
    worker, api, job = leased
    limits(history_bytes_per_job=4096)
    big = "é" * 1024  # 2,048 bytes in UTF-8: two of them fill the 4,096 exactly
    assert append(api, job, [{"role": "user", "content": big}]).json() == {"appended": 1}
    assert append(api, job, [{"role": "assistant", "content": big + "é"}]).status_code == 413
    assert append(api, job, [{"role": "assistant", "content": big}]).json() == {"appended": 1}
    assert ConversationEntry.objects.count() == 2


def test_history_caps_are_per_job(leased, make_worker, worker_api, enqueue):
    worker, api, job = leased
    limits(history_entries_per_job=2)
    assert append(api, job, entries(2)).json() == {"appended": 2}
    assert append(api, job, entries(1, start=2)).status_code == 413
    api.post(
        f"{API}/jobs/{job['message_id']}/complete/", {"lease_id": job["lease_id"]}, format="json"
    )
    enqueue("conv-q", "alpha")
    second = api.post(f"{API}/claim/", {}, format="json").json()["job"]
    assert append(api, second, entries(2, start=10)).json() == {"appended": 2}


def prepare(api):
    return api.post(f"{API}/snapshots/", {**TRIPLE, "reason": "drain"}, format="json")


def test_prepare_rate_is_per_worker_per_minute(leased, make_worker, worker_api):
    worker, api, job = leased
    with time_machine.travel(T0, tick=False) as clock:
        for _ in range(5):
            assert prepare(api).status_code == 201
            clock.shift(10)  # five prepares at 0, 10, …, 40 s
        refused = prepare(api)  # at 50 s: the first leaves the window at 60 s
        assert refused.status_code == 429
        assert refused.json() == {
            "error": "throttled",
            "detail": "Worker w-quota may prepare at most 5 snapshots per minute; retry in 10 s.",
            "retry_after": 10,
        }
        assert refused["Retry-After"] == "10"
        assert DataSnapshot.objects.count() == 5
        clock.shift(10.5)
        assert prepare(api).status_code == 201
        assert prepare(api).status_code == 429


def test_prepare_limit_comes_from_the_runtime_config(leased):
    worker, api, job = leased
    limits(snapshot_prepares_per_minute=1)
    with time_machine.travel(T0, tick=False):
        assert prepare(api).status_code == 201
        response = prepare(api)
    assert response.status_code == 429 and response.json()["retry_after"] == 60


def test_a_handoff_snapshot_is_never_throttled(leased):
    # The server asked for this snapshot (drain, fair share): refusing it would hold the
    # conversation's handoff until its timeout and lose the workspace's newest turns.
    worker, api, job = leased
    limits(snapshot_prepares_per_minute=1)
    with time_machine.travel(T0, tick=False):
        assert prepare(api).status_code == 201
        assert prepare(api).status_code == 429
        Conversation.objects.filter(conversation_id="conv-q").update(
            handoff_from_worker="w-quota", handoff_until=timezone.now() + dt.timedelta(minutes=2)
        )
        assert prepare(api).status_code == 201
        # Another worker's handoff, or one past its timeout, exempts nothing.
        Conversation.objects.filter(conversation_id="conv-q").update(handoff_from_worker="w-other")
        assert prepare(api).status_code == 429
        Conversation.objects.filter(conversation_id="conv-q").update(
            handoff_from_worker="w-quota", handoff_until=timezone.now()
        )
        assert prepare(api).status_code == 429
    assert DataSnapshot.objects.count() == 2
