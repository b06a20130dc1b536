import sys

from django.core.management.base import BaseCommand, CommandError

from agents.audit import actor_name
from agents.secret_store import SecretStoreError, import_secret


class Command(BaseCommand):
    help = "Store the value read from stdin as a new active version of REF (never echoed)."

    def add_arguments(self, parser):
        parser.add_argument("secret_ref")

    def handle(self, *args, secret_ref, **options):
        value = sys.stdin.read()
        if value.endswith("\n"):  # `echo value |` adds one; the value itself is kept as is
            value = value[:-1]
        try:
            secret = import_secret(
                secret_ref,
                value,
                actor=actor_name(command="import_secret"),
                metadata={"source": "command"},
            )
        except SecretStoreError as exc:
            raise CommandError(str(exc))
        self.stdout.write(f"Stored {secret.secret_ref} version {secret.version}.")
