"""The audit trail: call inside the transaction that makes the change it records."""

from __future__ import annotations

from typing import Any

from django.db import models

from agents.models import AuditEvent


def actor_name(user: Any = None, *, command: str | None = None) -> str:
    """A stable label for whoever acted: a staff username, a command, or the system."""
    if command:
        return f"command:{command}"
    if user is not None and getattr(user, "is_authenticated", False):
        return user.get_username()
    return "system"


def record_audit(
    actor: str, action: str, target: models.Model | str | None = None, **details: Any
) -> AuditEvent:
    if isinstance(target, models.Model):
        target_type, target_id = target._meta.label_lower, str(target.pk)
    else:
        target_type, target_id = "", str(target or "")
    return AuditEvent.objects.create(
        actor=actor, action=action, target_type=target_type, target_id=target_id, details=details
    )
