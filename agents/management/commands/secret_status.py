import json

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from agents.management.base import Command as BaseCommand
from agents.models import secret_ref_validator
from agents.secret_store import secret_status


class Command(BaseCommand):
    help = (
        "List secret refs (all, or the REFs given) with their active version, version count, "
        "key id and update time. Never prints a value."
    )

    def add_arguments(self, parser):
        parser.add_argument("refs", nargs="*", metavar="REF", help="Only these refs.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, refs, **options):
        for ref in refs:
            try:
                secret_ref_validator(ref)
            except ValidationError as exc:
                raise CommandError(f"{exc.messages[0]} (got {ref!r})")
        rows = secret_status(refs or None)
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
