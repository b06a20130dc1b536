"""Agent profile and runtime config changes, shared by commands and the admin."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.db import transaction
from django.forms.models import model_to_dict

from agents.audit import record_audit
from agents.models import AgentProfile, RuntimeConfig


class ConfigurationError(ValueError):
    """Invalid configuration input; nothing was saved."""


def _validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
    return " ".join(exc.messages)


def configure_agent(
    agent_key: str,
    *,
    actor: str,
    secrets_ref: list[str] | None = None,
    enabled: bool | None = None,
    bridge_config: dict | None = None,
    require_telegram_binding: bool | None = None,
) -> tuple[AgentProfile, bool]:
    """Create or update a profile; bumps its version on every change. Validates first."""
    with transaction.atomic():
        profile = AgentProfile.objects.select_for_update().filter(agent_key=agent_key).first()
        created = profile is None
        if created:
            profile = AgentProfile(agent_key=agent_key)
        changes = {
            "secrets_ref": secrets_ref,
            "enabled": enabled,
            "bridge_config": bridge_config,
            "require_telegram_binding": require_telegram_binding,
        }
        changed = [name for name, value in changes.items() if value is not None]
        for name in changed:
            setattr(profile, name, changes[name])
        if not created and changed:
            profile.version += 1
        try:
            profile.full_clean()
        except ValidationError as exc:
            raise ConfigurationError(_validation_message(exc))
        profile.save()
        record_audit(
            actor,
            "agent.create" if created else "agent.update",
            profile,
            agent_key=agent_key,
            changed=changed,
        )
    return profile, created


def parse_bridge_json(raw: str) -> dict:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigurationError(f"--bridge-json is not valid JSON: {exc}")
    if not isinstance(value, dict):
        raise ConfigurationError("--bridge-json must be a JSON object.")
    return value


RUNTIME_FIELDS = {
    "provider_kind",
    "app_name",
    "organization_slug",
    "image",
    "region",
    "fallback_regions",
    "volume_name",
    "volume_path",
    "volume_size_gb",
    "max_workers",
    "spawn_step",
    "idle_timeout_seconds",
    "lease_seconds",
    "stale_after_seconds",
    "max_attempts",
    "system_prompt",
    "guest_cpus",
    "guest_memory_mb",
    "fly_cleanup_nightly",
}


def configure_runtime(*, actor: str, **changes) -> RuntimeConfig:
    unknown = set(changes) - RUNTIME_FIELDS
    if unknown:
        raise ConfigurationError(f"Unknown runtime setting(s): {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        RuntimeConfig.get()
        config = RuntimeConfig.objects.select_for_update().get(pk=1)
        changed = [name for name, value in changes.items() if value is not None]
        for name in changed:
            setattr(config, name, changes[name])
        try:
            config.full_clean()
        except ValidationError as exc:
            raise ConfigurationError(_validation_message(exc))
        config.save()
        if changed:
            record_audit(actor, "runtime_config.update", config, changed=sorted(changed))
    return config


def runtime_config_dict(config: RuntimeConfig) -> dict:
    data = model_to_dict(config)
    data.pop("id", None)
    data["updated_at"] = config.updated_at.isoformat() if config.updated_at else None
    return data
