"""System checks for dangerous configuration: each has an ID and fires only when it should."""

from __future__ import annotations

import base64

import pytest
from django.core import checks

KEY = base64.b64encode(b"k" * 32).decode()


def ids(**kwargs) -> set[str]:
    return {message.id for message in checks.run_checks(**kwargs)}


@pytest.fixture
def production(settings):
    """A clean production configuration; each test changes one thing."""
    settings.DEBUG = False
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = KEY
    settings.PUBLIC_BASE_URL = "https://factory.example"
    settings.TELEGRAM_API_BASE_URL = "https://api.telegram.org"
    settings.FLY_API_BASE_URL = "https://api.machines.dev/v1"
    settings.AGENT_FACTORY_TELEGRAM_SANDBOX = False
    settings.ALLOWED_HOSTS = ["factory.example"]
    return settings


def test_clean_production_configuration_has_no_findings(production):
    production.REDIS_URL = ""
    assert {i for i in ids(include_deployment_checks=True) if i.startswith("agents.")} == set()


@pytest.mark.parametrize(
    "overrides, check_id, level",
    [
        ({"AGENT_FACTORY_ENCRYPTION_KEYS": "c2hvcnQ="}, "agents.E001", checks.ERROR),
        ({"AGENT_FACTORY_ENCRYPTION_KEYS": "%%%"}, "agents.E001", checks.ERROR),
        ({"AGENT_FACTORY_ENCRYPTION_KEYS": f"{KEY},{KEY}"}, "agents.W002", checks.WARNING),
        ({"PUBLIC_BASE_URL": "factory.example"}, "agents.E002", checks.ERROR),
        ({"PUBLIC_BASE_URL": "http://factory.example"}, "agents.W003", checks.WARNING),
        ({"ALLOWED_HOSTS": ["*"]}, "agents.W004", checks.WARNING),
        ({"Q_CLUSTER": {"timeout": 300, "retry": 300}}, "agents.E003", checks.ERROR),
        ({"TELEGRAM_API_BASE_URL": "http://tg.example"}, "agents.W005", checks.WARNING),
        ({"FLY_API_BASE_URL": "http://fly.example/v1"}, "agents.W006", checks.WARNING),
        ({"AGENT_FACTORY_TELEGRAM_SANDBOX": True}, "agents.W007", checks.WARNING),
        ({"WORKER_PROVIDER": "fly", "FLY_API_TOKEN": ""}, "agents.W008", checks.WARNING),
        ({"REDIS_URL": "localhost:6379"}, "agents.E004", checks.ERROR),
    ],
)
def test_dangerous_configuration_is_reported(production, overrides, check_id, level):
    for name, value in overrides.items():
        setattr(production, name, value)
    found = [m for m in checks.run_checks() if m.id == check_id]
    assert len(found) == 1 and found[0].level == level
    assert found[0].msg  # a sentence, not just an id


@pytest.mark.parametrize(
    "overrides",
    [
        {"PUBLIC_BASE_URL": "http://127.0.0.1:8000"},  # local: the embedded default
        {"TELEGRAM_API_BASE_URL": "http://localhost:9000/sandbox/telegram"},
        {"FLY_API_BASE_URL": "http://127.0.0.1:4280/v1"},
        {"WORKER_PROVIDER": "fly", "FLY_API_TOKEN": "token"},
        {"REDIS_URL": "rediss://cache.example:6380/0"},
    ],
)
def test_safe_variants_are_not_reported(production, overrides):
    for name, value in overrides.items():
        setattr(production, name, value)
    assert {i for i in ids() if i.startswith("agents.")} == set()


def test_debug_on_relaxes_the_production_warnings(settings):
    settings.DEBUG = True
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = KEY
    settings.PUBLIC_BASE_URL = "http://factory.example"
    settings.TELEGRAM_API_BASE_URL = "http://tg.example"
    settings.AGENT_FACTORY_TELEGRAM_SANDBOX = True
    settings.ALLOWED_HOSTS = ["*"]
    found = ids()
    assert not found & {"agents.W003", "agents.W004", "agents.W005", "agents.W007"}


def test_dev_key_warning_only_under_deploy(settings):
    settings.DEBUG = True
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = ""
    assert "agents.W001" not in ids()
    assert "agents.W001" in ids(include_deployment_checks=True)
