"""Fly cleanup runs, shown in the admin as the audit rows they wrote."""

from agents.models import AuditEvent


class FlyCleanupRun(AuditEvent):
    class Meta:
        proxy = True
        verbose_name = "Fly cleanup run"
