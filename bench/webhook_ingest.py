"""Webhook ingest under load (issue 3).

gunicorn on PostgreSQL, shaped as the main job serves it (``run_embedded``: 2 processes of
4 threads; ``--workers``/``--threads`` try other shapes); 5,000 distinct updates from 16
concurrent clients, each update sent twice (the second must be answered "duplicate").
Baseline in the same run and on the same server: a minimal view that inserts one row,
measured in rounds alternating with the webhook's.
Prints updates/s, p50/p99, their ratios to the baseline and the checks.

Every update passes the quotas at the door (SPEC §23: the sender's token bucket, the
conversation's queue cap), so their cost is measured; the traffic is spread over enough
private chats that no sender passes the default burst (10) and no conversation the default
queue cap (20): nothing is throttled by design, and the run checks that.

    .venv/bin/python bench/webhook_ingest.py [--updates 5000] [--clients 16] [--users N]
        [--rounds 10] [--workers 2] [--threads 4]

``BENCH_DATABASE_URL`` names the database it creates and drops (default ``af_bench``).
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from _common import Server, make_bench_bot, percentile, reset_database, setup_django

# The runtime config's defaults (SPEC §23) that the traffic must stay under.
DEFAULT_BURST = 10
DEFAULT_QUEUE_CAP = 20


def drive(url_for, bodies, headers, clients: int) -> tuple[float, list[float], list]:
    import requests

    latencies: list[float] = []
    answers: list = []
    lock = threading.Lock()
    cursor = iter(range(len(bodies)))
    cursor_lock = threading.Lock()

    def run():
        session = requests.Session()
        mine_lat, mine_ans = [], []
        while True:
            with cursor_lock:
                index = next(cursor, None)
            if index is None:
                break
            started = time.perf_counter()
            response = session.post(url_for(index), data=bodies[index], headers=headers, timeout=30)
            mine_lat.append(time.perf_counter() - started)
            mine_ans.append((response.status_code, response.content))
        with lock:
            latencies.extend(mine_lat)
            answers.extend(mine_ans)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, answers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10, help="alternating measurement rounds")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument(
        "--threads",
        type=int,
        default=4,
        help="threads per gunicorn worker (default 4, as run_embedded serves)",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=0,
        help="distinct senders (one private chat each); default: enough that each sends "
        f"at most {DEFAULT_BURST} updates, and at least 500",
    )
    args = parser.parse_args()
    users = args.users or max(500, -(-args.updates // DEFAULT_BURST))
    per_user = -(-args.updates // users)
    if per_user > min(DEFAULT_BURST, DEFAULT_QUEUE_CAP):
        parser.error(f"{per_user} updates per sender would be throttled; raise --users")

    reset_database()
    setup_django()
    from telegram.models import TelegramUpdate
    from workers.models import Message

    secret = make_bench_bot()

    updates = []
    for n in range(args.updates):
        update = {
            "update_id": n + 1,
            "message": {
                "message_id": n,
                "from": {"id": 1000 + n % users},
                "chat": {"id": 1000 + n % users, "type": "private"},
                "date": 0,
                "text": f"message {n}",
            },
        }
        updates.append(json.dumps(update))
    bodies = updates + updates  # every update twice
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret, "Content-Type": "application/json"}

    with Server(workers=args.workers, threads=args.threads) as server:
        # Warm both workers' connections, then measure the baseline and the webhook in
        # alternating rounds, so a machine whose load changes during the run weighs on
        # both sides alike (one long phase each let the load of the moment decide).
        drive(lambda i: f"{server.url}/bench/baseline/", ["{}"] * 50, {}, 4)
        base_elapsed = elapsed = 0.0
        base_lat, lat, answers = [], [], []
        size = -(-len(bodies) // args.rounds)
        for start in range(0, len(bodies), size):
            chunk = bodies[start : start + size]
            took, latencies, _ = drive(
                lambda i: f"{server.url}/bench/baseline/", ["{}"] * len(chunk), {}, args.clients
            )
            base_elapsed += took
            base_lat += latencies
            took, latencies, chunk_answers = drive(
                lambda i: f"{server.url}/telegram/webhook/900/", chunk, headers, args.clients
            )
            elapsed += took
            lat += latencies
            answers += chunk_answers

    statuses = {}
    for code, content in answers:
        key = (code, json.loads(content).get("status") if code == 200 else content[:40])
        statuses[key] = statuses.get(key, 0) + 1
    messages = Message.objects.count()
    distinct = Message.objects.values("payload__metadata__update_id").distinct().count()
    recorded = TelegramUpdate.objects.count()
    rate = len(bodies) / elapsed
    base_rate = len(bodies) / base_elapsed
    print(
        f"requests: {len(bodies)} ({args.updates} updates x2) from {args.clients} clients, "
        f"{users} senders; gunicorn {args.workers} workers x {args.threads} threads"
    )
    print(
        f"webhook:  {rate:8.1f} req/s  p50 {percentile(lat, 50) * 1000:6.1f} ms  "
        f"p99 {percentile(lat, 99) * 1000:6.1f} ms"
    )
    print(
        f"baseline: {base_rate:8.1f} req/s  p50 {percentile(base_lat, 50) * 1000:6.1f} ms  "
        f"p99 {percentile(base_lat, 99) * 1000:6.1f} ms"
    )
    print(f"throughput ratio webhook/baseline: {rate / base_rate:.2f} (target >= 0.60)")
    p99_ratio = percentile(lat, 99) / percentile(base_lat, 99)
    print(f"p99 ratio webhook/baseline: {p99_ratio:.2f} (target <= 1.50)")
    print(f"answers: {statuses}")
    print(
        f"queued messages: {messages}, distinct update ids: {distinct}, "
        f"recorded updates: {recorded}"
    )
    throttled = TelegramUpdate.objects.filter(outcome="throttled").count()
    print(
        f"lost: {args.updates - distinct}, duplicated: {messages - distinct}, "
        f"throttled: {throttled} (expected 0)"
    )


if __name__ == "__main__":
    main()
