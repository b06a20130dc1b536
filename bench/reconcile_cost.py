"""Reconcile decision cost against queue size (issue 5).

100, 10,000 and 100,000 queued messages over as many conversations, in one run, on
PostgreSQL: the time and the number of queries of one reconcile pass (decision only: the
provider is local with max_workers reached, so the demand walk runs but nothing spawns).

    .venv/bin/python bench/reconcile_cost.py
"""

from __future__ import annotations

import statistics
import time

from _common import reset_database, setup_django

SIZES = (100, 10_000, 100_000)


def main() -> None:
    reset_database()
    setup_django()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from agents.models import AgentProfile, Conversation, RuntimeConfig
    from workers.models import Message, Worker
    from workers.reconcile import reconcile

    agent = AgentProfile.objects.create(agent_key="bench")
    config = RuntimeConfig.get()
    config.provider_kind = "local"
    config.max_workers = 4
    config.save()
    now = timezone.now()
    # Four live workers use up max_workers, so the pass decides but spawns nothing.
    for n in range(4):
        Worker.objects.create(
            worker_id=f"busy-{n}",
            provider="local",
            heartbeat_at=now,
            scheduled_shutdown_at=now + timezone.timedelta(hours=1),
        )
    results = []
    have = 0
    for size in SIZES:
        batch = size - have
        for start in range(0, batch, 5000):
            count = min(5000, batch - start)
            conversations = Conversation.objects.bulk_create(
                Conversation(conversation_id=f"c-{have + start + i}", agent=agent)
                for i in range(count)
            )
            Message.objects.bulk_create(
                Message(conversation=c, agent_key="bench", payload={"n": 1}, scheduled_for=now)
                for c in conversations
            )
        have = size
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        Worker.objects.update(heartbeat_at=timezone.now())
        reconcile()  # warm
        timings = []
        for _ in range(7):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                report = reconcile()
                timings.append(time.perf_counter() - started)
            # A skipped pass (another reconcile holding the lock) would time nothing.
            assert report.skipped is None, report.skipped
        results.append(
            (size, statistics.median(timings), len(queries.captured_queries), report.demand)
        )
    for size, seconds, queries, demand in results:
        print(
            f"{size:>7} queued: {seconds * 1000:7.2f} ms median of 7, {queries} queries, "
            f"demand seen {demand}"
        )
    ratio = results[-1][1] / results[0][1]
    print(
        f"time ratio 100k/100: {ratio:.2f} (target <= 3.0); query counts "
        f"{'constant' if len({r[2] for r in results}) == 1 else 'NOT constant'}"
    )


if __name__ == "__main__":
    main()
