"""A small world for the consumer API: two tenants, agents with bots, keys of each kind."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from agents.consumer_api.services import create_api_key
from agents.models import AgentProfile, Tenant
from telegram.models import Bot

V1 = "/api/v1/"


def bind(client, user="u1", agent="alpha", tg="55"):
    """Bind ``user`` to ``agent`` (Telegram user ``tg``) through the API; the binding's JSON."""
    response = client.post(
        V1 + "bindings/",
        {"consumer_user_id": user, "agent_key": agent, "telegram_user_id": tg},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.fixture
def world(db):
    """Tenant ``default``: agents alpha, beta; tenant ``acme``: agent gamma. Each has a bot."""
    acme = Tenant.objects.create(slug="acme", name="Acme")
    agents = {}
    for n, (key, tenant) in enumerate([("alpha", None), ("beta", None), ("gamma", acme)]):
        fields = {"tenant": tenant} if tenant else {}
        agent = AgentProfile.objects.create(agent_key=key, **fields)
        Bot.objects.create(agent=agent, bot_identity=str(1000 + n), username=f"{key}_bot")
        agents[key] = agent
    return agents


@pytest.fixture
def make_key(db):
    def make(tenant="default", agents=None, read_only=False, **kwargs):
        return create_api_key(
            "test key",
            actor="test",
            tenant=tenant,
            agent_keys=agents,
            read_only=read_only,
            **kwargs,
        )

    return make


@pytest.fixture
def api():
    def client(key: str | None = None):
        c = APIClient()
        if key:
            c.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        return c

    return client


@pytest.fixture
def rw(world, make_key, api):
    """A read-write client of tenant ``default`` (all its agents)."""
    return api(make_key().key)
