"""What one webhook update costs the server, independent of the machine's load.

In process (Django's test client, no HTTP server) on PostgreSQL: posts ``--updates``
updates from as many private chats (each chat's first: a new conversation), then one more
from each chat (the common case), then those again (duplicates), after a warm-up that fills
the per-process caches as a running server has them; then as many requests to the baseline
view of bench/webhook_ingest.py. Prints per request the statements sent to the database
and the CPU time the process spent (``time.process_time``: not the wall clock, so other
processes on a shared machine barely move it). ``--profile`` prints the top of a CPU-time
cProfile of the common case.

    .venv/bin/python bench/webhook_cost.py [--updates 2000] [--profile]

``BENCH_DATABASE_URL`` names the database it creates and drops (default ``af_bench``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time

from _common import make_bench_bot, reset_database, setup_django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    reset_database()
    setup_django()
    from django.db import connection
    from django.test import Client

    secret = make_bench_bot()
    client = Client(HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=secret, HTTP_HOST="127.0.0.1")

    senders = args.updates  # each measured round: one update per private chat

    def body(n: int) -> str:
        # Warm-up updates (n < senders) come from chats of their own.
        user = 1000 + (n % senders if n >= senders else senders + n)
        return json.dumps(
            {
                "update_id": n,
                "message": {
                    "message_id": n,
                    "from": {"id": user},
                    "chat": {"id": user, "type": "private"},
                    "date": 0,
                    "text": f"message {n}",
                },
            }
        )

    def post(n: int) -> str:
        response = client.post("/telegram/webhook/900/", body(n), content_type="application/json")
        return response.json()["status"]

    for n in range(1, 51):  # warm up: config, decrypted secret, converters
        assert post(n) == "enqueued"
    numbers = range(senders, senders + args.updates)

    def measure(expected: str, profiler=None) -> tuple[float, float]:
        statements = 0

        def count(execute, sql, params, many, context):
            nonlocal statements
            statements += 1
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            started = time.process_time()
            if profiler:
                profiler.enable()
            for n in numbers:
                status = post(n)
                assert status == expected, status
            if profiler:
                profiler.disable()
            cpu = time.process_time() - started
        return statements / args.updates, cpu * 1000 / args.updates

    # CPU time, not the wall clock: waiting for the database is not what is looked for.
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    first_queries, first_cpu = measure("enqueued")
    numbers = range(2 * senders, 2 * senders + args.updates)
    new_queries, new_cpu = measure("enqueued", profiler)
    dup_queries, dup_cpu = measure("duplicate")
    baseline = Client(HTTP_HOST="127.0.0.1")
    started = time.process_time()
    for _ in numbers:
        baseline.post("/bench/baseline/", "{}", content_type="application/json")
    base_cpu = (time.process_time() - started) * 1000 / args.updates
    # Statements sent through a cursor; a transaction adds its BEGIN and COMMIT (the steps
    # of a chat's first update run in one, a later update's one statement needs none).
    print(f"first update of a chat: {first_queries:.2f} statements, {first_cpu:.2f} ms CPU")
    print(f"next update of a chat:  {new_queries:.2f} statements, {new_cpu:.2f} ms CPU")
    print(f"duplicate:              {dup_queries:.2f} statements, {dup_cpu:.2f} ms CPU")
    print(f"baseline:               1.00 statement, {base_cpu:.2f} ms CPU (one-row insert)")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
