"""System checks for dangerous configuration: each has an ID prefixed by the app that owns
the setting, and fires only when it should."""

from __future__ import annotations

import base64

import pytest
from django.core import checks

KEY = base64.b64encode(b"k" * 32).decode()


APPS = ("agents.", "workers.", "telegram.", "fly.")


def ids(**kwargs) -> set[str]:
    return {message.id for message in checks.run_checks(**kwargs)}


def ours(found: set[str]) -> set[str]:
    return {check_id for check_id in found if check_id.startswith(APPS)}


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
    assert ours(ids(include_deployment_checks=True)) == set()


@pytest.mark.parametrize(
    "overrides, check_id, level",
    [
        ({"AGENT_FACTORY_ENCRYPTION_KEYS": "c2hvcnQ="}, "agents.E001", checks.ERROR),
        ({"AGENT_FACTORY_ENCRYPTION_KEYS": "%%%"}, "agents.E001", checks.ERROR),
        ({"AGENT_FACTORY_ENCRYPTION_KEYS": f"{KEY},{KEY}"}, "agents.W002", checks.WARNING),
        ({"PUBLIC_BASE_URL": "factory.example"}, "agents.E002", checks.ERROR),
        ({"PUBLIC_BASE_URL": "http://factory.example"}, "telegram.W001", checks.WARNING),
        ({"ALLOWED_HOSTS": ["*"]}, "agents.W004", checks.WARNING),
        ({"Q_CLUSTER": {"timeout": 300, "retry": 300}}, "workers.E001", checks.ERROR),
        ({"TELEGRAM_API_BASE_URL": "http://tg.example"}, "telegram.W002", checks.WARNING),
        ({"FLY_API_BASE_URL": "http://fly.example/v1"}, "fly.W001", checks.WARNING),
        ({"AGENT_FACTORY_TELEGRAM_SANDBOX": True}, "telegram.W003", checks.WARNING),
        ({"WORKER_PROVIDER": "fly", "FLY_API_TOKEN": ""}, "fly.W002", checks.WARNING),
        ({"REDIS_URL": "localhost:6379"}, "workers.E002", checks.ERROR),
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
    assert ours(ids()) == set()


def test_debug_on_relaxes_the_production_warnings(settings):
    settings.DEBUG = True
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = KEY
    settings.PUBLIC_BASE_URL = "http://factory.example"
    settings.TELEGRAM_API_BASE_URL = "http://tg.example"
    settings.AGENT_FACTORY_TELEGRAM_SANDBOX = True
    settings.ALLOWED_HOSTS = ["*"]
    found = ids()
    assert not found & {"telegram.W001", "agents.W004", "telegram.W002", "telegram.W003"}


def test_dev_key_warning_only_under_deploy(settings):
    settings.DEBUG = True
    settings.AGENT_FACTORY_ENCRYPTION_KEYS = ""
    assert "agents.W001" not in ids()
    assert "agents.W001" in ids(include_deployment_checks=True)


def test_each_app_registers_its_own_checks():
    """agents checks only its own settings: Telegram's, Fly's and django-q2's live in their
    apps (registered from each AppConfig.ready)."""
    by_module = {}
    for check in checks.registry.registry.get_checks(include_deployment_checks=True):
        by_module.setdefault(check.__module__, set()).add(check.__name__)
    assert {"check_q_cluster", "check_redis_url"} <= by_module["workers.checks"]
    assert {"check_bot_api_url", "check_telegram_sandbox"} <= by_module["telegram.checks"]
    assert {"check_machines_api_url", "check_worker_provider"} <= by_module["fly.checks"]
    assert by_module["agents.checks"] == {
        "check_encryption_keys",
        "check_public_base_url",
        "check_debug_hosts",
        "check_dev_key_in_use",
    }
