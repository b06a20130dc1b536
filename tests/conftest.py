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
