from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from agents.management.base import Command as BaseCommand
from agents.management.base import JsonOutput
from agents.models import secret_ref_validator
from agents.secret_store import secret_status


class Command(JsonOutput, BaseCommand):
    help = (
        "List secret refs (all, or the REFs given) with their active version, version count, "
        "key id and update time. Never prints a value."
    )

    def add_arguments(self, parser):
        parser.add_argument("refs", nargs="*", metavar="REF", help="Only these refs.")

    def handle(self, *args, refs, **options):
        for ref in refs:
            try:
                secret_ref_validator(ref)
            except ValidationError as exc:
                raise CommandError(f"{exc.messages[0]} (got {ref!r})")
        rows = secret_status(refs or None)
        lines = [
            f"{row['secret_ref']}: "
            + (f"v{row['active_version']}" if row["active_version"] else "no active version")
            + f" of {row['versions']}, key {row['key_id'] or '-'}, "
            f"updated {row['updated_at'] or '-'}"
            for row in rows
        ]
        self.emit(options, {"secrets": rows}, "\n".join(lines) or "No secrets stored.")
