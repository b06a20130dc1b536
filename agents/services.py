"""Agent profile and runtime config changes, shared by commands and the admin."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from agents import budget
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
    runtime: dict | None = None,
) -> tuple[AgentProfile, bool]:
    """Create or update a profile. ``None`` leaves a setting as it is. Validates before
    saving, so bad input changes nothing; a call that changes nothing writes nothing.
    ``runtime`` holds runtime settings by field name (``parse_runtime_json``); there a
    ``None`` is a value (e.g. no temperature), and keys left out keep theirs."""
    requested = {
        "secrets_ref": secrets_ref,
        "enabled": enabled,
        "bridge_config": bridge_config,
        "require_telegram_binding": require_telegram_binding,
    }
    existed = AgentProfile.objects.filter(agent_key=agent_key).exists()
    try:
        return _configure_agent_once(agent_key, actor=actor, requested=requested, runtime=runtime)
    except (IntegrityError, ConfigurationError):
        # Another call created the profile between our read and our insert (the unique
        # key then fails as an IntegrityError or as "already exists"): apply ours as an
        # update of that profile. Any other error is the caller's to see.
        if existed or not AgentProfile.objects.filter(agent_key=agent_key).exists():
            raise
    return _configure_agent_once(agent_key, actor=actor, requested=requested, runtime=runtime)


def _configure_agent_once(
    agent_key: str, *, actor: str, requested: dict, runtime: dict | None = None
) -> tuple[AgentProfile, bool]:
    with transaction.atomic():
        profile = AgentProfile.objects.select_for_update().filter(agent_key=agent_key).first()
        created = profile is None
        if created:
            profile = AgentProfile(agent_key=agent_key)
        changed = _apply_changes(profile, requested, created=created)
        for name, value in (runtime or {}).items():
            if getattr(profile, name) != value:
                setattr(profile, name, value)
                changed.append(name)
        save_agent_profile(profile, actor=actor, created=created, changed=changed)
    return profile, created


def _apply_changes(obj, requested: dict, *, created: bool = False) -> list[str]:
    """Set each requested value that is not None and differs (every one on a new row);
    returns the names of the fields it set."""
    changed = [
        name
        for name, value in requested.items()
        if value is not None and (created or getattr(obj, name) != value)
    ]
    for name in changed:
        setattr(obj, name, requested[name])
    return changed


def save_agent_profile(
    profile: AgentProfile, *, actor: str, created: bool, changed: list[str]
) -> bool:
    """The one place a profile is saved (command and admin): validate, bump ``version`` on
    a real change, save and audit. Returns False when there was nothing to save."""
    if not created and not changed:
        return False
    try:
        profile.full_clean()
    except ValidationError as exc:
        raise ConfigurationError(_validation_message(exc))
    if not created:
        profile.version += 1
    with transaction.atomic():
        profile.save()
        record_audit(
            actor,
            "agent.create" if created else "agent.update",
            profile,
            agent_key=profile.agent_key,
            changed=sorted(changed),
        )
        if "monthly_budget_usd" in changed:  # a raised cap resumes, a lowered one pauses
            budget.sync_flags(profile.agent_key, timezone.now(), actor)
    return True


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
    "reassign_after_seconds",
    "handoff_timeout_seconds",
    "system_prompt",
    "guest_cpus",
    "guest_memory_mb",
    "fly_cleanup_nightly",
    "user_rate_per_minute",
    "user_burst",
    "conversation_queue_cap",
    "history_entries_per_job",
    "history_bytes_per_job",
    "snapshot_prepares_per_minute",
    "monthly_budget_usd",
}


def configure_runtime(*, actor: str, **changes) -> RuntimeConfig:
    """Change runtime settings; ``None`` leaves one as it is. Validates every value before
    saving, so bad input changes nothing; a call that changes nothing writes nothing."""
    unknown = set(changes) - RUNTIME_FIELDS
    if unknown:
        raise ConfigurationError(f"Unknown runtime setting(s): {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        RuntimeConfig.get()
        config = RuntimeConfig.objects.select_for_update().get(pk=1)
        changed = _apply_changes(config, changes)
        save_runtime_config(config, actor=actor, changed=changed)
    return config


def save_runtime_config(config: RuntimeConfig, *, actor: str, changed: list[str]) -> bool:
    """The one place the runtime config is saved (command and admin): validate, save,
    audit. Returns False when there was nothing to save."""
    if not changed:
        return False
    try:
        config.full_clean()
    except ValidationError as exc:
        raise ConfigurationError(_validation_message(exc))
    with transaction.atomic():
        config.save()
        record_audit(actor, "runtime_config.update", config, changed=sorted(changed))
        if "monthly_budget_usd" in changed:
            budget.sync_flags(None, timezone.now(), actor)
    return True


def runtime_config_dict(config: RuntimeConfig) -> dict:
    data = model_to_dict(config)
    data.pop("id", None)
    if data.get("monthly_budget_usd") is not None:
        data["monthly_budget_usd"] = str(data["monthly_budget_usd"])
    data["updated_at"] = config.updated_at.isoformat() if config.updated_at else None
    return data
