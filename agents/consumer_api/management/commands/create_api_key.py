"""``create_api_key NAME [--tenant T] [--agent KEY ...] [--read-only] [--webhook-url URL]``.

Prints the key once (it is stored hashed and cannot be shown again).
"""

from __future__ import annotations

import json

from django.core.management.base import CommandError

from agents.consumer_api.services import ApiKeyError, create_api_key
from agents.management.base import Command as BaseCommand


class Command(BaseCommand):
    help = "Create a consumer API key (printed once)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--tenant", default="default")
        parser.add_argument("--agent", action="append", dest="agents", default=[])
        parser.add_argument("--read-only", action="store_true")
        parser.add_argument("--webhook-url", default="")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options):
        try:
            created = create_api_key(
                options["name"],
                actor="command:create_api_key",
                tenant=options["tenant"],
                agent_keys=options["agents"],
                read_only=options["read_only"],
                webhook_url=options["webhook_url"],
            )
        except ApiKeyError as exc:
            raise CommandError(str(exc))
        data = {
            "id": created.api_key.pk,
            "key": created.key,
            "prefix": created.api_key.prefix,
            "tenant": options["tenant"],
            "mode": created.api_key.mode,
            "agents": sorted(set(options["agents"])),
        }
        if created.webhook_secret:
            data["webhook_secret"] = created.webhook_secret
        if options["json"]:
            self.stdout.write(json.dumps(data))
            return
        self.stdout.write(f"API key {data['prefix']} ({data['mode']}, tenant {data['tenant']}):")
        self.stdout.write(f"  {created.key}")
        if created.webhook_secret:
            self.stdout.write(f"  webhook secret: {created.webhook_secret}")
        self.stdout.write("Store it now: it is not shown again.")
