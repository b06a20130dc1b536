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
