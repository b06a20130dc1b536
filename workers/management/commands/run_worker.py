"""``manage.py run_worker``: the reference worker (SPEC §12).

Exit codes: 0 normal stop (SIGTERM, should_stop, idle exit); 2 bad configuration;
3 the server refused the token.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from workers.runtime.api_client import ApiError, WorkerApiClient
from workers.runtime.handlers import load_handler
from workers.runtime.runner import (
    EXIT_CONFIG,
    EXIT_UNAUTHORIZED,
    WorkerRuntime,
    WorkerSettings,
)


def _env(name: str, default=None):
    value = os.environ.get(name)
    return value if value not in (None, "") else default


class Command(BaseCommand):
    help = "Run a worker: poll the worker API, run jobs, deliver replies, snapshot on exit."

    def add_arguments(self, parser):
        parser.add_argument("--api-url", default=_env("AGENT_FACTORY_API_URL"))
        parser.add_argument("--token", default=_env("AGENT_FACTORY_WORKER_TOKEN"))
        parser.add_argument("--worker-id", default=_env("AGENT_FACTORY_WORKER_ID"))
        parser.add_argument("--conversation-id", default=_env("AGENT_FACTORY_CONVERSATION_ID"))
        parser.add_argument("--agent-key", default=_env("AGENT_FACTORY_AGENT_KEY"))
        parser.add_argument("--data-dir", default=_env("AGENT_FACTORY_DATA_DIR"))
        parser.add_argument("--workspace-id", default=_env("AGENT_FACTORY_WORKSPACE_ID", "default"))
        parser.add_argument("--handler", default=_env("AGENT_FACTORY_WORKER_HANDLER", "echo"))
        parser.add_argument(
            "--skills-channel", default=_env("AGENT_FACTORY_SKILLS_CHANNEL", "stable")
        )
        parser.add_argument(
            "--idle-exit-seconds",
            type=float,
            default=float(_env("AGENT_FACTORY_IDLE_EXIT_SECONDS", 0)) or None,
        )
        parser.add_argument(
            "--poll-seconds", type=float, default=float(_env("AGENT_FACTORY_POLL_SECONDS", 2.0))
        )
        parser.add_argument(
            "--heartbeat-seconds",
            type=float,
            default=float(_env("AGENT_FACTORY_HEARTBEAT_SECONDS", 10.0)),
        )

    def handle(self, *args, **options):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
        missing = [n for n in ("api_url", "token", "worker_id") if not options[n]]
        if missing:
            self.stderr.write(
                "run_worker needs "
                + ", ".join(f"--{m.replace('_', '-')}" for m in missing)
                + " (or the AGENT_FACTORY_* environment variables)."
            )
            raise SystemExit(EXIT_CONFIG)
        try:
            handler = load_handler(options["handler"])
        except RuntimeError as exc:
            self.stderr.write(str(exc))
            raise SystemExit(EXIT_CONFIG)
        data_dir = Path(
            options["data_dir"] or Path(settings.VAR_DIR) / "worker-data" / options["worker_id"]
        )
        worker_settings = WorkerSettings(
            api_url=options["api_url"],
            token=options["token"],
            worker_id=options["worker_id"],
            data_dir=data_dir,
            conversation_id=options["conversation_id"],
            agent_key=options["agent_key"],
            workspace_id=options["workspace_id"],
            handler=options["handler"],
            skills_channel=options["skills_channel"],
            idle_exit_seconds=options["idle_exit_seconds"],
            poll_seconds=options["poll_seconds"],
            heartbeat_seconds=options["heartbeat_seconds"],
        )
        runtime = WorkerRuntime(
            worker_settings, WorkerApiClient(options["api_url"], options["token"]), handler
        )
        signal.signal(signal.SIGTERM, runtime.request_stop)
        signal.signal(signal.SIGINT, runtime.request_stop)
        try:
            code = runtime.run()
        except ApiError as exc:
            if exc.status == 401:
                self.stderr.write("The server refused this worker's token (401).")
                raise SystemExit(EXIT_UNAUTHORIZED)
            raise
        raise SystemExit(code)
