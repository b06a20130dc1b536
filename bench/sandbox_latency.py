"""Time from simulate_update to the reply in the Telegram sandbox (issue 6).

Starts the README's main job (scripts/run.sh) in a throwaway var/ directory on a free port,
posts signed updates to the demo agent's webhook exactly as ``simulate_update`` does, and
measures until the echo reply is stored by the sandbox. The first message pays for a
worker spawn; the median is over the next N, served by the warm worker.

    .venv/bin/python bench/sandbox_latency.py [--messages 20] [--think-min 1 --think-max 5]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import statistics
import subprocess
import tempfile
import time

from _common import ROOT, free_port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20)
    # SPEC §22: measured with a random 1–5 s think time, so an idle worker's pickup counts
    # (and the per-chat pacing of 1 message/s does not: a user does not type that fast).
    parser.add_argument("--think-min", type=float, default=0.0)
    parser.add_argument("--think-max", type=float, default=0.0)
    args = parser.parse_args()
    var_dir = tempfile.mkdtemp(prefix="af-latency-")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_URL", "TELEGRAM_", "PUBLIC_BASE_URL"))
    }
    env.update(AGENT_FACTORY_VAR_DIR=var_dir, PORT=str(port), DEBUG="1")
    log = open(os.path.join(var_dir, "main.log"), "wb")  # noqa: SIM115
    main_job = subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        log_path = os.path.join(var_dir, "main.log")
        while b"Press Ctrl+C" not in open(log_path, "rb").read():  # noqa: SIM115
            if time.monotonic() > deadline or main_job.poll() is not None:
                raise RuntimeError("the main job did not start")
            time.sleep(0.3)
        os.environ.update(
            env,
            PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
            TELEGRAM_API_BASE_URL=f"http://127.0.0.1:{port}/sandbox/telegram",
            DJANGO_SETTINGS_MODULE="config.settings",
        )
        import django

        django.setup()
        from django.core.management import call_command

        from telegram.models import SandboxMessage

        def one(n: int) -> float:
            before = SandboxMessage.objects.filter(chat_id="777").count()
            started = time.perf_counter()
            call_command(
                "simulate_update",
                "demo",
                f"ping {n}",
                "--telegram-user",
                "777",
                stdout=io.StringIO(),
            )
            while SandboxMessage.objects.filter(chat_id="777").count() <= before:
                if time.perf_counter() - started > 120:
                    raise RuntimeError(f"no reply to message {n}")
                time.sleep(0.02)
            return time.perf_counter() - started

        cold = one(0)
        def think() -> None:
            if args.think_max > 0:
                time.sleep(random.uniform(args.think_min, args.think_max))  # noqa: S311

        warm = []
        for n in range(1, args.messages + 1):
            think()
            warm.append(one(n))
        print(f"first message (spawns a worker): {cold:.2f} s")
        print(
            f"next {len(warm)} messages: median {statistics.median(warm):.2f} s, "
            f"min {min(warm):.2f} s, max {max(warm):.2f} s"
        )
    finally:
        os.killpg(main_job.pid, signal.SIGTERM)
        main_job.wait(timeout=60)
        log.close()


if __name__ == "__main__":
    main()
