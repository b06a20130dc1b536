"""Fly cleanup runs, shown in the admin as the audit rows they wrote."""

from agents.models import AuditEvent


class FlyCleanupRun(AuditEvent):
    class Meta:
        proxy = True
        verbose_name = "Fly cleanup run"
        # Applying a cleanup destroys every machine and volume of the Fly app (SPEC §16);
        # viewing the runs (and the dry-run preview) is the ordinary view permission.
        permissions = [("run_cleanup", "Can run Fly cleanup (destroys machines and volumes)")]
