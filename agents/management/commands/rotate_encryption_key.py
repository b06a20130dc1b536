from django.core.management.base import CommandError

from agents.audit import actor_name
from agents.management.base import Command as BaseCommand
from agents.management.base import JsonOutput
from agents.secret_store import rotate_encryption_key


class Command(JsonOutput, BaseCommand):
    help = (
        "Re-encrypt every secret under the first key of AGENT_FACTORY_ENCRYPTION_KEYS. "
        "Idempotent; keep the old keys listed until this reports no failures."
    )

    def handle(self, *args, **options):
        report = rotate_encryption_key(actor=actor_name(command="rotate_encryption_key"))
        # The report (stdout) names each failed row; stderr keeps its one line.
        text = (
            f"Re-encrypted {report['rotated']} secret version(s) under key "
            f"{report['primary_key_id']}; {report['already_current']} already current; "
            f"{report['failed']} failed."
        )
        self.emit(options, report, "\n".join([text] + [f"  failed: {e}" for e in report["errors"]]))
        if report["failed"]:
            raise CommandError(
                f"{report['failed']} secret version(s) could not be decrypted with the "
                "configured keys and were left as they are."
            )
