"""The fly app's django-q2 schedules (assembled with every app's by config/schedules.py)."""

from __future__ import annotations

from agents.models import RuntimeConfig
from workers.scheduling import Scheduled


def nightly_cleanup_enabled() -> bool:
    """The nightly cleanup is opt-in (``fly_cleanup_nightly``): registered only while on."""
    return RuntimeConfig.get().fly_cleanup_nightly


# Daily at 03:00 UTC rather than a cron expression: cron schedules need croniter, which is
# not a dependency, and a daily schedule with its first run set to 03:00 is the same thing.
NIGHTLY_CLEANUP = Scheduled(
    "fly-cleanup-nightly",
    "fly.cleanup.run_scheduled_cleanup",
    "D",
    "03:00",
    enabled_if=nightly_cleanup_enabled,
)

SCHEDULES = [NIGHTLY_CLEANUP]
