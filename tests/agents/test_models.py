"""Validation of AgentProfile and RuntimeConfig (SPEC §3): what the admin and the commands
both rely on, since both call ``full_clean`` through the shared save functions."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from agents.models import AgentProfile, RuntimeConfig
from agents.services import ConfigurationError, configure_agent, configure_runtime


@pytest.mark.parametrize("key", ["a", "alpha", "sales-bot", "bot_2", "x" * 64, "0day"])
def test_agent_key_slugs_accepted(db, key):
    AgentProfile(agent_key=key).full_clean()


@pytest.mark.parametrize(
    "key", ["", "Alpha", "sales bot", "-lead", "trail-", "a/b", "über", "x" * 65, "a.b"]
)
def test_agent_key_must_be_a_slug(db, key):
    with pytest.raises(ValidationError) as exc:
        AgentProfile(agent_key=key).full_clean()
    assert "agent_key" in exc.value.message_dict


def test_agent_key_is_unique(db):
    configure_agent("dup", actor="t")
    with pytest.raises(ValidationError, match="already exists"):
        AgentProfile(agent_key="dup").full_clean()


@pytest.mark.parametrize(
    "bridge",
    [
        {},
        {"enabled": False},
        {
            "enabled": True,
            "base_url": "https://bridge.example",
            "service_id": "svc",
            "app_key": "app",
            "service_key_secret_ref": "bridge.serviceKey",
            "app_base_url_map_json_secret_ref": "bridge.appMap",
        },
    ],
)
def test_bridge_config_shapes_accepted(db, bridge):
    AgentProfile(agent_key="ok", bridge_config=bridge).full_clean()


@pytest.mark.parametrize(
    "bridge, message",
    [
        ([1, 2], "must be a JSON object"),
        ("text", "must be a JSON object"),
        ({"colour": "red"}, "Unknown bridge config key(s): colour"),
        ({"enabled": "yes"}, "'enabled' must be a bool"),
        ({"base_url": 5}, "'base_url' must be a str"),
        ({"service_id": ["a"]}, "'service_id' must be a str"),
        ({"service_key_secret_ref": "bad ref"}, "'service_key_secret_ref': Secret ref"),
        ({"base_url": "ftp://x"}, "must start with http:// or https://"),
        ({"enabled": True}, "needs 'base_url' when 'enabled' is true"),
    ],
)
def test_bridge_config_shape_rejected(db, bridge, message):
    with pytest.raises(ValidationError) as exc:
        AgentProfile(agent_key="ok", bridge_config=bridge).full_clean()
    assert message in " ".join(exc.value.message_dict["bridge_config"])


@pytest.mark.parametrize(
    "refs, message",
    [
        ("openai.key", "must be a list of secret refs"),
        ([1], "must be a list of secret refs"),
        (["ok.ref", "bad ref"], "Secret ref must be"),
    ],
)
def test_secrets_ref_must_be_a_list_of_refs(db, refs, message):
    with pytest.raises(ValidationError) as exc:
        AgentProfile(agent_key="ok", secrets_ref=refs).full_clean()
    assert message in " ".join(exc.value.message_dict["secrets_ref"])


def test_profile_defaults(db):
    profile, created = configure_agent("fresh", actor="t")
    assert created and profile.version == 1 and profile.enabled
    assert profile.require_telegram_binding is False  # unpaired senders reach the agent
    assert profile.secrets_ref == [] and profile.bridge_config == {}


def test_runtime_config_defaults_follow_the_spec(db, settings):
    settings.WORKER_PROVIDER = "none"
    config = RuntimeConfig.get()
    assert config.pk == 1 and config.provider_kind == "none"  # from WORKER_PROVIDER
    assert (config.max_workers, config.spawn_step, config.idle_timeout_seconds) == (4, 1, 1800)
    assert (config.lease_seconds, config.stale_after_seconds, config.max_attempts) == (360, 420, 5)
    assert (config.retry_base_seconds, config.retry_factor, config.retry_max_seconds) == (
        1.0,
        2.0,
        120.0,
    )
    assert config.snapshot_timeout_seconds == 600
    settings.WORKER_PROVIDER = "fly"
    assert RuntimeConfig.get().provider_kind == "none"  # afterwards the row decides


@pytest.mark.parametrize(
    "field, bad, good",
    [
        ("lease_seconds", 0, 1),
        ("lease_seconds", 86401, 86400),
        ("max_workers", 1001, 0),
        ("spawn_step", 0, 100),
        ("spawn_step", 101, 1),
        ("idle_timeout_seconds", 9, 10),
        ("stale_after_seconds", 4, 5),
        ("max_attempts", 0, 1),
        ("max_attempts", 101, 100),
        ("volume_size_gb", 0, 500),
        ("volume_size_gb", 501, 1),
        ("guest_cpus", 17, 16),
        ("guest_memory_mb", 255, 256),
        ("retry_factor", 0.5, 1.0),
        ("retry_base_seconds", -1.0, 0.0),
        ("telegram_attachment_retention_seconds", 59, 60),
        ("snapshot_retention_seconds", 59, 60),
        ("provider_kind", "k8s", "fly"),
    ],
)
def test_runtime_policy_ranges(db, field, bad, good):
    config = RuntimeConfig.get()
    setattr(config, field, bad)
    with pytest.raises(ValidationError) as exc:
        config.full_clean()
    assert field in exc.value.message_dict
    setattr(config, field, good)
    config.full_clean()


def test_runtime_cross_field_rules(db):
    config = RuntimeConfig.get()
    config.retry_base_seconds, config.retry_max_seconds = 10.0, 5.0
    with pytest.raises(ValidationError, match="Must be at least the retry base"):
        config.full_clean()
    with pytest.raises(ConfigurationError, match="fallback_regions: Must be a list"):
        configure_runtime(actor="t", fallback_regions=["ams", " "])
    with pytest.raises(ConfigurationError, match="Unknown runtime setting"):
        configure_runtime(actor="t", colour="red")
    config = RuntimeConfig.objects.get()
    assert (config.retry_base_seconds, config.retry_max_seconds) == (1.0, 120.0)
    assert config.fallback_regions == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_configure_agent_creates_one_profile_and_loses_no_change():
    from agents.models import AuditEvent
    from tests.race import run_at_once

    options = [
        {"enabled": False},
        {"require_telegram_binding": True},
        {"secrets_ref": ["a.key"]},
        {"bridge_config": {"enabled": False, "service_id": "svc"}},
    ]

    def run(kwargs):
        configure_agent("racer", actor="t", **kwargs)

    run_at_once(run, [(kwargs,) for kwargs in options], join_timeout=30)
    profile = AgentProfile.objects.get(agent_key="racer")
    assert not profile.enabled and profile.require_telegram_binding
    assert profile.secrets_ref == ["a.key"] and profile.bridge_config["service_id"] == "svc"
    actions = sorted(AuditEvent.objects.values_list("action", flat=True))
    assert actions == ["agent.create", "agent.update", "agent.update", "agent.update"]
    assert profile.version == 4
