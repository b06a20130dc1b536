"""Shared fixtures: a small named world of agents, and helpers used across the suite."""

from __future__ import annotations

import pytest

from agents.models import AgentProfile, RuntimeConfig


@pytest.fixture
def runtime_config(db) -> RuntimeConfig:
    return RuntimeConfig.get()


@pytest.fixture
def alpha_agent(db) -> AgentProfile:
    return AgentProfile.objects.create(agent_key="alpha")


@pytest.fixture
def beta_agent(db) -> AgentProfile:
    return AgentProfile.objects.create(agent_key="beta")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``postgres`` need real concurrent connections; SQLite runs skip them."""
    from django.db import connection

    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def make_worker(db):
    """Register a worker and return (worker, bearer token)."""
    from workers.models import Worker
    from workers.tokens import mint_worker_token

    counter = {"n": 0}

    def make(worker_id: str | None = None, **fields):
        counter["n"] += 1
        worker = Worker.objects.create(worker_id=worker_id or f"w-{counter['n']}", **fields)
        return worker, mint_worker_token(worker)

    return make


@pytest.fixture
def worker_api():
    """A DRF client bound to a worker token: worker_api(token).post(path, body)."""
    from rest_framework.test import APIClient

    def client(token: str | None):
        api = APIClient()
        if token:
            api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return api

    return client


WORKER_API = "/api/v1/worker"


@pytest.fixture
def claim_as(make_worker, worker_api):
    """Register a live worker and claim through the worker API: claim_as("w-1") returns
    (worker, its API client, the claimed job's JSON, ``None`` when there was none)."""
    from django.utils import timezone

    def claim(worker_id: str | None = None):
        worker, token = make_worker(worker_id, heartbeat_at=timezone.now())
        api = worker_api(token)
        job = api.post(f"{WORKER_API}/claim/", {}, format="json").json()["job"]
        return worker, api, job

    return claim


def post_job(api, job, action: str, **body):
    """POST a lease-holding call (complete, fail, delivered, …) for a claimed job."""
    return api.post(
        f"{WORKER_API}/jobs/{job['message_id']}/{action}/",
        {"lease_id": job["lease_id"], **body},
        format="json",
    )


@pytest.fixture
def enqueue(db):
    from workers.queue import enqueue_message

    def do(conversation_id: str, agent_key: str, text: str = "hello", **kwargs):
        payload = {"provider": "telegram", "provider_user_id": "u1", "message_text": text}
        return enqueue_message(
            conversation_id=conversation_id, agent_key=agent_key, payload=payload, **kwargs
        ).message

    return do


@pytest.fixture(autouse=True)
def clear_process_caches():
    """Hot-path caches (decrypted webhook secrets, runtime config) live per process; tests
    create and drop rows freely, so each test starts with them empty."""
    from agents.models import _RUNTIME_CONFIG_CACHE
    from telegram import webhook

    _RUNTIME_CONFIG_CACHE.clear()
    webhook._PLAINTEXT_BY_ROW.clear()
    yield
