import getpass
import sys

from agents.audit import actor_name
from agents.management.base import Command as BaseCommand
from agents.management.base import JsonOutput
from agents.secret_store import SecretStoreError, import_secret


class Command(JsonOutput, BaseCommand):
    help = (
        "Store the value read from stdin as a new active version of REF. The value is never "
        "echoed; on a terminal it is prompted for without echo."
    )
    errors = (SecretStoreError,)

    def add_arguments(self, parser):
        parser.add_argument("secret_ref")

    def handle(self, *args, secret_ref, **options):
        if sys.stdin.isatty():
            # Typed by hand: never show it on screen (or in the terminal's scrollback).
            value = getpass.getpass(f"Value for {secret_ref}: ")
        else:
            value = sys.stdin.read()
            if value.endswith("\n"):  # `echo value |` adds one; the value itself is kept
                value = value[:-1]
        secret = import_secret(
            secret_ref,
            value,
            actor=actor_name(command="import_secret"),
            metadata={"source": "command"},
        )
        data = {
            "secret_ref": secret.secret_ref,
            "version": secret.version,
            "active": secret.active,
            "key_id": secret.key_id,
        }
        self.emit(options, data, f"Stored {secret.secret_ref} version {secret.version}.")
