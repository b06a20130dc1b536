"""Handlers used by the end-to-end tests (loaded by dotted path in worker processes).

A worker's environment holds only allowlisted names (SPEC §23), so these handlers take
their cues from files next to their data dir (the test's own local data root).
"""

import json
import os
import time
from pathlib import Path

from workers.runtime.handlers import echo


def slow_marker(data_root: Path) -> Path:
    return Path(data_root) / "slow-started"


def slow_echo(context):
    """Echo after a pause, so a test can kill the worker in the middle of a job: only the
    first "slow" job pauses (it leaves a marker; the next worker then answers at once)."""
    marker = slow_marker(context.data_dir.parent)
    if "slow" in context.text and not marker.exists():
        marker.touch()
        time.sleep(30)
    return echo(context)


def counting(context):
    """Append the message to a file in the workspace and answer with the whole file: a turn
    lost to an older snapshot shows as a missing line in the next reply."""
    turns = context.data_dir / "workspace" / "turns.txt"
    turns.parent.mkdir(parents=True, exist_ok=True)
    with open(turns, "a") as handle:
        handle.write(context.text + "\n")
    return " / ".join(turns.read_text().splitlines())


def dump_surroundings(context):
    """Write what the worker can see of the server (its environment, its settings, its data
    dir's parents) to ``surroundings.json`` in its data dir, for the isolation test."""
    from django.conf import settings

    parents = {}
    for directory in context.data_dir.resolve().parents:
        try:
            parents[str(directory)] = sorted(os.listdir(directory))
        except OSError as exc:
            parents[str(directory)] = f"unlistable: {exc.strerror}"
    under_root = [
        str(Path(top) / name)
        for top, dirs, files in os.walk(context.data_dir.parent)
        for name in dirs + files
    ]
    # The environment the process was started with (os.environ also has what manage.py
    # adds itself: DJANGO_SETTINGS_MODULE).
    initial = Path("/proc/self/environ").read_bytes().split(b"\0")
    dump = {
        "initial_environ": dict(item.decode().split("=", 1) for item in initial if b"=" in item),
        "environ": dict(os.environ),
        "settings_module": os.environ.get("DJANGO_SETTINGS_MODULE"),
        "secret_key": settings.SECRET_KEY,
        "databases": settings.DATABASES,
        "has_encryption_keys": hasattr(settings, "AGENT_FACTORY_ENCRYPTION_KEYS"),
        "has_fly_token": hasattr(settings, "FLY_API_TOKEN"),
        "parents": parents,
        "under_data_root": under_root,
    }
    (context.data_dir / "surroundings.json").write_text(json.dumps(dump, default=str))
    return "dumped"


def openclaw_with_runtime(context):
    """The ``openclaw`` handler with the hydration's ``runtime`` section taken from
    ``runtime.json`` beside the data dir (outside it, so never in a snapshot): a stand-in for
    the server-side runtime settings until the hydration carries them (SPEC §8, §21)."""
    from workers.runtime.handlers import JobContext
    from workers.runtime.openclaw import openclaw

    runtime = json.loads((context.data_dir.parent / "runtime.json").read_text())
    bundle = {**context.bundle, "runtime": runtime}
    return openclaw(JobContext(job=context.job, bundle=bundle, data_dir=context.data_dir))


def _stop_openclaw():
    from workers.runtime.openclaw import openclaw

    openclaw.before_snapshot()


openclaw_with_runtime.before_snapshot = _stop_openclaw
