"""``set_api_key_webhook PREFIX --url URL [--rotate-secret] [--json]``: a key's event
webhook (SPEC §15). ``--url ""`` turns the webhook off. A new signing secret (first URL, or
``--rotate-secret``) is printed once."""

from __future__ import annotations

import json

from django.core.management.base import CommandError

from agents.consumer_api.models import ApiKey
from agents.consumer_api.webhooks import WebhookUrlError, set_webhook
from agents.management.base import Command as BaseCommand


class Command(BaseCommand):
    help = "Set or clear a consumer API key's event webhook URL (a new secret is printed once)."

    def add_arguments(self, parser):
        parser.add_argument("prefix", help="The key's prefix (shown in the admin and at creation).")
        parser.add_argument("--url", required=True, help='https URL; "" turns webhooks off.')
        parser.add_argument("--rotate-secret", action="store_true")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options):
        api_key = ApiKey.objects.filter(prefix=options["prefix"]).first()
        if api_key is None:
            raise CommandError(f"API key '{options['prefix']}' not found.")
        try:
            secret = set_webhook(
                api_key,
                options["url"],
                actor="command:set_api_key_webhook",
                rotate_secret=options["rotate_secret"],
            )
        except WebhookUrlError as exc:
            raise CommandError(str(exc))
        if options["json"]:
            data = {"prefix": api_key.prefix, "webhook_url": api_key.webhook_url}
            if secret:
                data["webhook_secret"] = secret
            self.stdout.write(json.dumps(data))
            return
        if not api_key.webhook_url:
            self.stdout.write(f"Event webhooks of key {api_key.prefix} are off.")
            return
        self.stdout.write(f"Event webhooks of key {api_key.prefix} go to {api_key.webhook_url}.")
        if secret:
            self.stdout.write(f"  signing secret: {secret}")
            self.stdout.write("Store it now: it is not shown again.")
