"""``manage.py run_worker``: the reference worker (SPEC §12), a thin wrapper around the
``agent-factory-worker`` program (``workers.runtime.cli``): same flags, same environment
variables, same exit codes — 0 normal stop (SIGTERM, should_stop, idle exit); 1 the API
answered with another error (e.g. 403) or stayed unreachable past the outage limit; 2 bad
configuration (missing or invalid setting, unknown handler); 3 the server refused the token
(401). What it adds from its settings (``config.worker_settings``, which holds nothing of the
server's): the default data dir, in the system temp dir and never under ``var/`` (SPEC §23),
and the Telegram API base URL (``TELEGRAM_API_BASE_URL``) unless ``AGENT_FACTORY_*`` says
otherwise.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from workers.runtime import cli
from workers.runtime.data_dir import default_data_dir


class Command(BaseCommand):
    # The server's checks need the server's settings; the worker has none of them (SPEC §23).
    requires_system_checks = []
    help = cli.DESCRIPTION

    def add_arguments(self, parser):
        cli.add_arguments(parser, telegram_api_base_url=settings.TELEGRAM_API_BASE_URL)

    def handle(self, *args, **options):
        code = cli.execute(
            options, error=self.stderr.write, default_data_dir=default_data_dir, prog="run_worker"
        )
        raise SystemExit(code)
