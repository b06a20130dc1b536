"""Crash test (issue 4): HTTP workers killed with SIGKILL mid-job; nothing lost, nothing twice.

1,000 messages over 100 conversations; worker processes loop claim → heartbeat → complete
against gunicorn on PostgreSQL with a short lease and stale window. The controller keeps a
pool of workers, SIGKILLs a third of all the workers it ever starts at random moments and
replaces them with fresh identities (victims are mostly workers holding a lease at that
moment, so kills land mid-job), runs the lease sweep every second (as the schedule would),
and watches that no conversation ever has two processing messages. At the end every message
must be done exactly once, or dead-lettered with its reason, each conversation's messages
done in order, and at least a third of the workers started must have been killed.

    .venv/bin/python bench/crash_test.py [--pool 12] [--kill-share 0.33] [--lease 3] [--stale 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/af_queue_crash")

from _common import PYTHON, ROOT, Server, reset_database, setup_django  # noqa: E402

CONVERSATIONS = 100
PER_CONVERSATION = 10
TIME_LIMIT = 600  # seconds: the run stops by itself whatever happens


def worker_main(url: str, token: str, log_path: str, idle_exit: float) -> None:
    """One worker process: claim → heartbeat → (work) → complete, logging each completion.

    A refused or failed request is not a crash: the worker waits a moment and goes on (only
    SIGKILL from the controller ends it abruptly).
    """
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    api = f"{url}/api/v1/worker"
    # As the reference worker does on start; a worker that booted too slowly (stale already)
    # is told to stop and leaves, and the controller replaces it.
    if session.post(f"{api}/control/", json={}, timeout=30).json().get("should_stop"):
        return
    idle_since = time.monotonic()
    with open(log_path, "a", buffering=1) as log:
        while time.monotonic() - idle_since < idle_exit:
            try:
                answer = session.post(f"{api}/claim/", json={}, timeout=30)
                job = answer.json()["job"] if answer.status_code == 200 else None
                if job is None:
                    time.sleep(0.1)
                    continue
                idle_since = time.monotonic()
                lease = {"lease_id": job["lease_id"]}
                base = f"{api}/jobs/{job['message_id']}"
                time.sleep(random.uniform(0, 0.03))  # the "work"
                if session.post(f"{base}/heartbeat/", json=lease, timeout=30).status_code != 200:
                    continue  # lease lost: another worker will do (or did) this job
                time.sleep(random.uniform(0, 0.03))
                answer = session.post(f"{base}/complete/", json=lease, timeout=30)
                if answer.status_code == 200:
                    log.write(f"{job['message_id']}\n")
            except requests.RequestException:
                time.sleep(0.2)


def seed() -> None:
    from django.utils import timezone

    from agents.models import AgentProfile, Conversation
    from workers.models import Message

    agent = AgentProfile.objects.create(agent_key="crash")
    conversations = Conversation.objects.bulk_create(
        Conversation(conversation_id=f"crash-{n}", agent=agent) for n in range(CONVERSATIONS)
    )
    now = timezone.now()
    Message.objects.bulk_create(
        Message(
            conversation=c,
            agent_key="crash",
            payload={"seq": seq},
            scheduled_for=now + timezone.timedelta(microseconds=seq),
            created_at=now,
        )
        for seq in range(PER_CONVERSATION)
        for c in conversations
    )


def double_processing() -> list:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conversation_id, COUNT(*) FROM workers_message WHERE status = 'processing' "
            "GROUP BY conversation_id HAVING COUNT(*) > 1"
        )
        return cursor.fetchall()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool", type=int, default=12, help="live worker processes")
    parser.add_argument(
        "--kill-share", type=float, default=1 / 3, help="share of started workers to SIGKILL"
    )
    parser.add_argument("--lease", type=int, default=3, help="lease seconds")
    parser.add_argument("--stale", type=int, default=5, help="worker stale-after seconds")
    args = parser.parse_args()
    reset_database()
    setup_django()
    from django.db import connection
    from django.utils import timezone

    from agents.models import RuntimeConfig
    from workers.models import Message, Worker
    from workers.sweep import sweep_expired_leases
    from workers.tokens import mint_worker_token

    config = RuntimeConfig.get()
    config.lease_seconds = args.lease
    config.stale_after_seconds = args.stale
    config.save()
    seed()
    logs = Path(ROOT, "var", "crash-test")
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("*.log"):
        old.unlink()

    started_count = 0
    killed: list[str] = []
    killed_mid_job = 0
    live: dict[str, subprocess.Popen] = {}
    violations: list = []
    sweeps = Counter()

    def start_worker(url: str) -> None:
        nonlocal started_count
        started_count += 1
        worker_id = f"crash-w{started_count}"
        worker = Worker.objects.create(worker_id=worker_id, heartbeat_at=timezone.now())
        token = mint_worker_token(worker)
        live[worker_id] = subprocess.Popen(
            [
                PYTHON,
                __file__,
                "--worker",
                url,
                token,
                str(logs / f"{worker_id}.log"),
                str(args.stale + args.lease + 2),
            ],
            cwd=ROOT,
        )

    def unfinished() -> int:
        return Message.objects.filter(status__in=["queued", "processing"]).count()

    def holding_a_lease() -> set[str]:
        return set(
            Message.objects.filter(
                status="processing", lease_expires_at__gt=timezone.now()
            ).values_list("claimed_by", flat=True)
        )

    began = time.monotonic()
    with Server(workers=2, threads=4) as server:
        next_kill = time.monotonic() + random.uniform(1, 3)
        next_sweep = time.monotonic()
        while time.monotonic() - began < TIME_LIMIT:
            for worker_id, process in list(live.items()):
                if process.poll() is not None:
                    del live[worker_id]
            remaining = unfinished()
            if remaining == 0 and not live:
                break
            while remaining and len(live) < args.pool:
                start_worker(server.url)
            now = time.monotonic()
            if len(killed) < args.kill_share * started_count and now >= next_kill and live:
                # Mostly a worker in the middle of a job (claimed, heartbeating or completing),
                # sometimes any worker (idle, or between requests).
                busy = sorted(holding_a_lease() & set(live))
                mid_job = bool(busy) and random.random() < 0.8
                victim = random.choice(busy if mid_job else sorted(live))
                killed_mid_job += mid_job
                live.pop(victim).send_signal(signal.SIGKILL)
                killed.append(victim)
                behind = len(killed) < args.kill_share * started_count
                next_kill = now + (
                    random.uniform(0.05, 0.3) if behind else random.uniform(0.3, 1.5)
                )
            if now >= next_sweep:
                sweeps.update(sweep_expired_leases())
                next_sweep = now + 1
            found = double_processing()
            if found:
                violations.append(found)
            time.sleep(0.05)
        for process in live.values():
            process.send_signal(signal.SIGKILL)
            process.wait()
    elapsed = time.monotonic() - began

    completions = Counter()
    for path in logs.glob("*.log"):
        completions.update(int(line) for line in path.read_text().split())
    statuses = Counter(Message.objects.values_list("status", flat=True))
    done_ids = set(Message.objects.filter(status="done").values_list("id", flat=True))
    dead = list(Message.objects.filter(status="dead_letter").values("id", "last_error"))
    twice = [m for m, n in completions.items() if n > 1]
    # One processing message per conversation means each conversation's messages finish in
    # claim order (seq order here): a done message never completed before an earlier one.
    out_of_order = []
    done_rows = Message.objects.filter(status="done").order_by("conversation_id", "completed_at")
    last_seq: dict[int, int] = {}
    for conversation_pk, payload in done_rows.values_list("conversation_id", "payload"):
        if payload["seq"] < last_seq.get(conversation_pk, -1):
            out_of_order.append(conversation_pk)
        last_seq[conversation_pk] = payload["seq"]
    kill_quota = round(args.kill_share * started_count) - 1  # the last starts may outrun it
    # A worker killed right after its complete landed never logged it: logged ⊆ done.
    logged_not_done = set(completions) - done_ids
    connection.close()
    report = {
        "messages": CONVERSATIONS * PER_CONVERSATION,
        "elapsed_seconds": round(elapsed, 1),
        "workers_started": started_count,
        "workers_killed": len(killed),
        "workers_killed_mid_job": killed_mid_job,
        "kill_share": round(len(killed) / max(1, started_count), 3),
        "statuses": dict(statuses),
        "dead_letters_without_reason": sum(1 for d in dead if not d["last_error"]),
        "completed_twice": len(twice),
        "logged_complete_but_not_done": len(logged_not_done),
        "lost": statuses.get("queued", 0) + statuses.get("processing", 0),
        "two_processing_in_a_conversation_seen": len(violations),
        "conversations_done_out_of_order": len(out_of_order),
        "messages_retried_after_a_kill": Message.objects.filter(attempts__gt=0).count(),
        "max_attempts_seen": max(Message.objects.values_list("attempts", flat=True)),
        "controller_sweeps": dict(sweeps),
    }
    print(json.dumps(report, indent=2))
    ok = (
        report["lost"] == 0
        and not twice
        and not logged_not_done
        and not violations
        and not out_of_order
        and len(killed) >= kill_quota
        and report["dead_letters_without_reason"] == 0
        and statuses.get("done", 0) + statuses.get("dead_letter", 0) == report["messages"]
    )
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    else:
        main()
