"""Shared plumbing for the telegram commands: JSON output and clear one-line errors."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from agents.secret_store import SecretUnavailable
from telegram.bots import TelegramSetupError
from telegram.pairing import PairingError


class TelegramCommand(BaseCommand):
    json_option = True

    def add_arguments(self, parser):
        if self.json_option:
            parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except (TelegramSetupError, PairingError, SecretUnavailable) as exc:
            raise CommandError(str(exc))

    def emit(self, options, data: dict, text: str) -> None:
        if options.get("json"):
            self.stdout.write(json.dumps(data, default=str))
        else:
            self.stdout.write(text)
