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
