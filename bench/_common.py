"""Shared plumbing for the benchmarks: a gunicorn server on PostgreSQL, percentiles."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PYTHON = sys.executable
PG_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/af_bench")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        DATABASE_URL=PG_URL,
        DEBUG="0",
        # Plain http on loopback: the production defaults would redirect every request to
        # https (SPEC §23's documented opt-outs, as the test suite uses them).
        SECURE_SSL_REDIRECT="0",
        SECURE_HSTS_SECONDS="0",
        **extra,
    )
    return env


def setup_django(**extra) -> None:
    os.environ.update(bench_env(**extra))
    import django

    django.setup()


def reset_database() -> None:
    """Drop and recreate the bench database, then migrate it."""
    import psycopg

    name = PG_URL.rsplit("/", 1)[1]
    with psycopg.connect(PG_URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=bench_env(), check=True)


class Server:
    """gunicorn serving bench.settings on a free loopback port."""

    def __init__(self, workers: int = 2, threads: int = 1, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "gunicorn",
                "config.wsgi",
                "-b",
                f"127.0.0.1:{self.port}",
                "-w",
                str(workers),
                "--threads",
                str(threads),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=bench_env(**env),
            start_new_session=True,
        )

    def __enter__(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/healthz/", timeout=2)  # noqa: S310
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc):
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def make_bench_bot() -> str:
    """The "bench" agent with a sandbox-shaped bot (identity 900) and its webhook secret,
    as the webhook benches post to it; returns the secret. Needs
    ``setup_django`` first."""
    from agents.models import AgentProfile
    from agents.secret_refs import bot_token_ref, webhook_secret_ref
    from agents.secret_store import import_secret
    from telegram.models import Bot

    agent = AgentProfile.objects.create(agent_key="bench")
    import_secret(
        bot_token_ref("bench"),
        "900:BENCH-TOKEN-xxxxxxxx",
        actor="bench",
        metadata={"bot_identity": "900"},
    )
    secret = "w" * 43
    import_secret(webhook_secret_ref("bench"), secret, actor="bench")
    Bot.objects.create(agent=agent, bot_identity="900", username="bench_bot")
    return secret
