"""Handlers used by the end-to-end tests (loaded by dotted path in worker processes)."""

import os
import time

from workers.runtime.handlers import echo


def slow_echo(context):
    """Echo after a pause, so a test can kill the worker in the middle of a job."""
    marker = os.environ.get("E2E_SLOW_MARKER")
    if "slow" in context.text and marker:
        open(marker, "a").close()
        time.sleep(float(os.environ.get("E2E_SLOW_SECONDS", "30")))
    return echo(context)


def counting(context):
    """Append the message to a file in the workspace and answer with the whole file: a turn
    lost to an older snapshot shows as a missing line in the next reply."""
    turns = context.data_dir / "workspace" / "turns.txt"
    turns.parent.mkdir(parents=True, exist_ok=True)
    with open(turns, "a") as handle:
        handle.write(context.text + "\n")
    return " / ".join(turns.read_text().splitlines())
