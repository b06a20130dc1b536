from django.core.management.base import BaseCommand

from agents.management.base import JsonOutput
from workers.scheduling import register_schedules


class Command(JsonOutput, BaseCommand):
    help = "Register every app's django-q2 schedules (each declares its own in schedules.py)."

    def handle(self, *args, **options):
        result = register_schedules()
        self.emit(
            options,
            result,
            f"Schedules: {result['created']} created, {result['updated']} updated, "
            f"{result['unchanged']} unchanged, {result['removed']} removed.",
        )
