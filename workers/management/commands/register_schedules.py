from django.core.management.base import BaseCommand

from workers.scheduling import register_schedules


class Command(BaseCommand):
    help = "Register every app's django-q2 schedules (each declares its own in schedules.py)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options):
        result = register_schedules()
        if options["json"]:
            import json

            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(
            f"Schedules: {result['created']} created, {result['updated']} updated, "
            f"{result['unchanged']} unchanged, {result['removed']} removed."
        )
