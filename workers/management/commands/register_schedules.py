from django.core.management.base import BaseCommand
from django_q.models import Schedule

from agents.models import RuntimeConfig
from config.schedules import NIGHTLY_FLY_CLEANUP, SCHEDULES


def register_schedules() -> dict:
    """Create or update every schedule by name (catch-up off); idempotent."""
    wanted = list(SCHEDULES)
    if RuntimeConfig.get().fly_cleanup_nightly:
        wanted.append(NIGHTLY_FLY_CLEANUP)
    created = updated = 0
    for name, func, kind, every in wanted:
        fields = {"func": func, "schedule_type": kind, "repeats": -1}
        if kind == Schedule.MINUTES:
            fields["minutes"] = every
        if kind == Schedule.CRON:
            fields["cron"] = every
        _, was_created = Schedule.objects.update_or_create(name=name, defaults=fields)
        created += was_created
        updated += not was_created
    removed = 0
    if not RuntimeConfig.get().fly_cleanup_nightly:
        removed, _ = Schedule.objects.filter(name=NIGHTLY_FLY_CLEANUP[0]).delete()
    return {"created": created, "updated": updated, "removed": removed}


class Command(BaseCommand):
    help = "Register the django-q2 schedules (reconcile, sweeps, expiry, nightly Fly cleanup)."

    def handle(self, *args, **options):
        result = register_schedules()
        self.stdout.write(
            f"Schedules: {result['created']} created, {result['updated']} updated, "
            f"{result['removed']} removed."
        )
