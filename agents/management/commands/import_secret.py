import getpass
import json
import sys

from django.core.management.base import CommandError

from agents.audit import actor_name
from agents.management.base import Command as BaseCommand
from agents.secret_store import SecretStoreError, import_secret


class Command(BaseCommand):
    help = (
        "Store the value read from stdin as a new active version of REF. The value is never "
        "echoed; on a terminal it is prompted for without echo."
    )

    def add_arguments(self, parser):
        parser.add_argument("secret_ref")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, secret_ref, **options):
        if sys.stdin.isatty():
            # Typed by hand: never show it on screen (or in the terminal's scrollback).
            value = getpass.getpass(f"Value for {secret_ref}: ")
        else:
            value = sys.stdin.read()
            if value.endswith("\n"):  # `echo value |` adds one; the value itself is kept
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
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "secret_ref": secret.secret_ref,
                        "version": secret.version,
                        "active": secret.active,
                        "key_id": secret.key_id,
                    }
                )
            )
        else:
            self.stdout.write(f"Stored {secret.secret_ref} version {secret.version}.")
