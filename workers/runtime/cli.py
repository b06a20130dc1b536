"""``agent-factory-worker``: the reference worker as a program of its own (SPEC §12).

It needs no Django, no database and no server setting: only the worker API's URL and a
worker token. ``manage.py run_worker`` is a thin wrapper around ``add_arguments`` and
``execute`` (same flags, same exit codes).

Configuration comes from flags or the matching environment variables:
``AGENT_FACTORY_API_URL``, ``AGENT_FACTORY_WORKER_TOKEN``, ``AGENT_FACTORY_WORKER_ID`` (all
three required), ``AGENT_FACTORY_CONVERSATION_ID``, ``AGENT_FACTORY_AGENT_KEY``,
``AGENT_FACTORY_DATA_DIR``, ``AGENT_FACTORY_WORKSPACE_ID``, ``AGENT_FACTORY_WORKER_HANDLER``
(a handler for every job: ``echo``, ``llm``, ``http``, ``openclaw`` or a dotted path; unset:
each agent's runtime handler from the hydration), ``AGENT_FACTORY_SKILLS_CHANNEL``,
``AGENT_FACTORY_IDLE_EXIT_SECONDS``, ``AGENT_FACTORY_POLL_SECONDS`` (2),
``AGENT_FACTORY_HEARTBEAT_SECONDS`` (10), ``AGENT_FACTORY_MAX_OUTAGE_SECONDS`` (900; 0 waits
for the API forever) and ``AGENT_FACTORY_TELEGRAM_API_BASE_URL`` (where the worker sends
replies while it delivers them itself).

Exit codes: 0 normal stop (SIGTERM, should_stop, idle exit); 1 the API answered with
another error (e.g. 403) or stayed unreachable past the outage limit; 2 bad configuration
(missing or invalid setting, unknown handler); 3 the server refused the token (401).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from workers.runtime.api_client import ApiError, WorkerApiClient
from workers.runtime.handlers import load_handler
from workers.runtime.runner import (
    EXIT_API_ERROR,
    EXIT_CONFIG,
    EXIT_UNAUTHORIZED,
    WorkerRuntime,
    WorkerSettings,
)
from workers.runtime.telegram_sender import DEFAULT_API_BASE_URL

PROG = "agent-factory-worker"
DESCRIPTION = (
    "Run a worker: poll the worker API, run jobs, deliver replies, snapshot on exit. "
    "Exit codes: 0 normal stop (SIGTERM, should_stop, idle exit), 1 another API error, "
    "2 bad configuration, 3 the server refused the token."
)


def _env(name: str, default=None):
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _seconds(*, allow_zero: bool):
    """An argparse type: a number of seconds (argparse also applies it to env defaults, so
    a bad environment variable is reported like a bad flag, with exit code 2)."""

    def parse(raw):
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
        if value < 0 or (value == 0 and not allow_zero) or value != value:
            raise argparse.ArgumentTypeError(f"{raw!r} must be a positive number of seconds")
        return value

    return parse


def add_arguments(parser, *, telegram_api_base_url: str = DEFAULT_API_BASE_URL) -> None:
    """The worker's flags, each defaulting to its ``AGENT_FACTORY_*`` variable."""
    parser.add_argument("--api-url", default=_env("AGENT_FACTORY_API_URL"))
    parser.add_argument("--token", default=_env("AGENT_FACTORY_WORKER_TOKEN"))
    parser.add_argument("--worker-id", default=_env("AGENT_FACTORY_WORKER_ID"))
    parser.add_argument("--conversation-id", default=_env("AGENT_FACTORY_CONVERSATION_ID"))
    parser.add_argument("--agent-key", default=_env("AGENT_FACTORY_AGENT_KEY"))
    parser.add_argument("--data-dir", default=_env("AGENT_FACTORY_DATA_DIR"))
    parser.add_argument("--workspace-id", default=_env("AGENT_FACTORY_WORKSPACE_ID", "default"))
    parser.add_argument(
        "--handler",
        default=_env("AGENT_FACTORY_WORKER_HANDLER"),
        help="Run this handler for every job (echo, llm, http, openclaw or a dotted path); "
        "default: each agent's runtime handler, from the hydration.",
    )
    parser.add_argument("--skills-channel", default=_env("AGENT_FACTORY_SKILLS_CHANNEL", "stable"))
    parser.add_argument(
        "--idle-exit-seconds",
        type=_seconds(allow_zero=True),
        default=_env("AGENT_FACTORY_IDLE_EXIT_SECONDS", "0"),
        help="Exit after this long without a job (0: never).",
    )
    parser.add_argument(
        "--poll-seconds",
        type=_seconds(allow_zero=False),
        default=_env("AGENT_FACTORY_POLL_SECONDS", "2"),
        help="Wait between control/claim polls while idle (SPEC: 2 s).",
    )
    parser.add_argument(
        "--claim-wait-seconds",
        type=_seconds(allow_zero=True),
        default=_env("AGENT_FACTORY_CLAIM_WAIT_SECONDS", "20"),
        help="Let the server hold an idle claim this long, ≤ 25 (long poll; 0: plain polls).",
    )
    parser.add_argument(
        "--max-outage-seconds",
        type=_seconds(allow_zero=True),
        default=_env("AGENT_FACTORY_MAX_OUTAGE_SECONDS", "900"),
        help="Exit (code 1) when the API stays unreachable this long (0: never).",
    )
    parser.add_argument(
        "--heartbeat-seconds",
        type=_seconds(allow_zero=False),
        default=_env("AGENT_FACTORY_HEARTBEAT_SECONDS", "10"),
        help="Lease heartbeat interval while a job runs (SPEC: 10 s).",
    )
    parser.add_argument(
        "--telegram-api-base-url",
        default=_env("AGENT_FACTORY_TELEGRAM_API_BASE_URL", telegram_api_base_url),
        help="The Bot API the worker sends replies to while it delivers them itself.",
    )


def execute(
    options: dict,
    *,
    error: Callable[[str], object],
    default_data_dir: Callable[[str], Path] | None = None,
    prog: str = PROG,
) -> int:
    """Check the options, run the worker until it stops; returns the exit code.

    ``error`` writes one line for the operator (never the token). ``default_data_dir(worker
    id)`` gives the data dir when none is configured (it may raise ValueError); without it
    ``--data-dir`` is required.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    missing = [n for n in ("api_url", "token", "worker_id") if not options[n]]
    if not options["data_dir"] and default_data_dir is None:
        missing.append("data_dir")
    if missing:
        error(
            f"{prog} needs "
            + ", ".join(f"--{m.replace('_', '-')}" for m in missing)
            + " (or the AGENT_FACTORY_* environment variables)."
        )
        return EXIT_CONFIG
    for name in ("api_url", "telegram_api_base_url"):
        if urlsplit(options[name]).scheme not in ("http", "https"):
            error(f"--{name.replace('_', '-')} must be an http(s) URL.")
            return EXIT_CONFIG
    try:
        handler = load_handler(options["handler"]) if options["handler"] else None
    except RuntimeError as exc:
        error(str(exc))
        return EXIT_CONFIG
    try:
        data_dir = Path(options["data_dir"] or default_data_dir(options["worker_id"]))
    except ValueError as exc:
        error(f"No default data dir: {exc}; pass --data-dir.")
        return EXIT_CONFIG
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
        telegram_api_base_url=options["telegram_api_base_url"],
        idle_exit_seconds=options["idle_exit_seconds"] or None,
        poll_seconds=options["poll_seconds"],
        claim_wait_seconds=min(options["claim_wait_seconds"], 25.0),
        heartbeat_seconds=options["heartbeat_seconds"],
        max_outage_seconds=options["max_outage_seconds"],
    )
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        error(f"Cannot create the data dir {data_dir}: {exc.strerror}.")
        return EXIT_CONFIG
    runtime = WorkerRuntime(
        worker_settings, WorkerApiClient(options["api_url"], options["token"]), handler
    )
    # SIGTERM/SIGINT only ask the loop to stop: the job in hand is finished, then the
    # data dir is snapshotted. The previous handlers come back afterwards.
    previous = {
        signum: signal.signal(signum, runtime.request_stop)
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        return runtime.run()
    except ApiError as exc:
        if exc.status == 401:
            error("The server refused this worker's token (401).")
            return EXIT_UNAUTHORIZED
        error(f"The worker API answered {exc}; stopping.")
        return EXIT_API_ERROR
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)


def main(argv: list[str] | None = None) -> int:
    """The ``agent-factory-worker`` console script."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    return execute(options, error=lambda line: print(line, file=sys.stderr, flush=True))


if __name__ == "__main__":
    sys.exit(main())
