"""``manage.py run_worker``: the reference worker (SPEC §12), a thin wrapper around the
``agent-factory-worker`` program (``workers.runtime.cli``): same flags, same environment
variables, same exit codes — 0 normal stop (SIGTERM, should_stop, idle exit); 1 the API
answered with another error (e.g. 403) or stayed unreachable past the outage limit; 2 bad
configuration (missing or invalid setting, unknown handler); 3 the server refused the token
(401). What it adds from the server's settings: the default data dir and the Telegram API
base URL (``TELEGRAM_API_BASE_URL``) unless ``AGENT_FACTORY_*`` says otherwise.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from workers.runtime import cli


def _default_data_dir(worker_id: str) -> Path:
    return Path(settings.VAR_DIR) / "worker-data" / worker_id


class Command(BaseCommand):
    help = cli.DESCRIPTION

    def add_arguments(self, parser):
        cli.add_arguments(parser, telegram_api_base_url=settings.TELEGRAM_API_BASE_URL)

    def handle(self, *args, **options):
        code = cli.execute(
            options, error=self.stderr.write, default_data_dir=_default_data_dir, prog="run_worker"
        )
        raise SystemExit(code)
