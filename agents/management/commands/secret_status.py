import json

from django.core.management.base import BaseCommand

from agents.secret_store import secret_status


class Command(BaseCommand):
    help = "List secret refs with their active version and update time (never values)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options):
        rows = secret_status()
        if options["json"]:
            self.stdout.write(json.dumps({"secrets": rows}))
            return
        if not rows:
            self.stdout.write("No secrets stored.")
        for row in rows:
            active = f"v{row['active_version']}" if row["active_version"] else "no active version"
            self.stdout.write(
                f"{row['secret_ref']}: {active} of {row['versions']}, "
                f"key {row['key_id'] or '-'}, updated {row['updated_at'] or '-'}"
            )
