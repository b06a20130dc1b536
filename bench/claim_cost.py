"""What one claim, heartbeat and complete cost, against the trivial authenticated request of
bench/claim_throughput.py (a), independent of the machine's load.

In process (Django's test client, no HTTP server) on PostgreSQL: one worker works through
its conversation (claim + heartbeat + complete per message) with a trivial request after
every cycle, after a warm-up that fills the per-process caches and prepares the
statements as a running server has them. Prints per request the statements sent through
a cursor, this process's CPU time (``time.process_time``: waiting for the database is not
counted) and, where Linux's per-task scheduler statistics can be read, the CPU time of
the database server's processes meanwhile. The in-process ratio is the HTTP benchmark's
(a) without the HTTP server and client, whose fixed cost per request both sides share.
Each figure is the median of ``--rounds`` rounds.

    .venv/bin/python bench/claim_cost.py [--cycles 3000] [--rounds 3]

``BENCH_DATABASE_URL`` names the database it creates and drops (default ``af_bench``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import reset_database, setup_django
from claim_throughput import seed, token_for

KINDS = ("claim", "heartbeat", "complete", "trivial")


def postgres_cpu_ns() -> int | None:
    """CPU time the database server's processes used so far (ns), or None if unreadable."""
    total, found = 0, False
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if not cmdline.read_bytes().startswith(b"postgres"):
                continue
            total += int((cmdline.parent / "schedstat").read_text().split()[0])
            found = True
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
    return total if found else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    reset_database()
    setup_django()
    from django.db import connection
    from django.test import Client

    from agents.models import AgentProfile, RuntimeConfig

    agent = AgentProfile.objects.create(agent_key="bench")
    RuntimeConfig.get()
    warm_up = 300
    seed(agent, ["own-0"], args.cycles + warm_up + 10)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for('w-0')}", HTTP_HOST="127.0.0.1")
    api = "/api/v1/worker"

    def post(path: str, body: dict) -> dict:
        response = client.post(path, body, content_type="application/json")
        assert response.status_code == 200, response.content
        return response.json()

    def request(kind: str, job: dict | None):
        if kind == "claim":
            found = post(f"{api}/claim/", {"conversation_id": "own-0"})["job"]
            assert found is not None
            return found
        if kind == "trivial":
            return post("/bench/trivial/", {})
        return post(f"{api}/jobs/{job['message_id']}/{kind}/", {"lease_id": job["lease_id"]})

    statements = dict.fromkeys(KINDS, 0)
    counting: list[str] = []

    def count(execute, sql, params, many, context):
        statements[counting[0]] += 1
        return execute(sql, params, many, context)

    def cycle(cpu: dict, database: dict) -> None:
        job = None
        for kind in KINDS:
            counting[:] = [kind]
            db_before, started = postgres_cpu_ns(), time.process_time()
            result = request(kind, job)
            cpu[kind] += time.process_time() - started
            db_after = postgres_cpu_ns()
            if db_before is not None and db_after is not None:
                database[kind] += db_after - db_before
            job = result if kind == "claim" else job

    post(f"{api}/control/", {})
    for _ in range(warm_up):
        cycle(dict.fromkeys(KINDS, 0.0), dict.fromkeys(KINDS, 0))
    per_round = args.cycles // args.rounds
    cpu_rounds, db_rounds = [], []
    with connection.execute_wrapper(count):
        for _ in range(args.rounds):
            cpu, database = dict.fromkeys(KINDS, 0.0), dict.fromkeys(KINDS, 0)
            for _ in range(per_round):
                cycle(cpu, database)
            cpu_rounds.append({k: v * 1e6 / per_round for k, v in cpu.items()})
            db_rounds.append({k: v / 1000 / per_round for k, v in database.items()})

    def median(rounds: list[dict], kind: str) -> float:
        return statistics.median(r[kind] for r in rounds)

    have_db = postgres_cpu_ns() is not None
    for kind in KINDS:
        line = (
            f"{kind:<10} {statements[kind] / (per_round * args.rounds):.2f} statements, "
            f"{median(cpu_rounds, kind):6.0f} us CPU"
        )
        if have_db:
            line += f", database {median(db_rounds, kind):5.0f} us CPU"
        print(line)
    cycle_cpu = sum(median(cpu_rounds, k) for k in KINDS[:3])
    print(
        f"in-process ratio (3 x trivial / one cycle): "
        f"{3 * median(cpu_rounds, 'trivial') / cycle_cpu:.2f}"
    )
    if have_db:
        cycle_db = sum(median(db_rounds, k) for k in KINDS[:3])
        both = 3 * (median(cpu_rounds, "trivial") + median(db_rounds, "trivial"))
        print(f"   counting the database's CPU too: {both / (cycle_cpu + cycle_db):.2f}")
    print("(statements: those sent through a cursor; a transaction adds BEGIN and COMMIT)")


if __name__ == "__main__":
    main()
