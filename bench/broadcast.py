"""A push to 10,000 bound users on PostgreSQL (issue 13): what the dispatcher costs.

One agent with 10,000 active bindings and a due push job aimed at all of them. Prints:
- the claim (one transaction: lock the due job, write the dispatch, the broadcast and
  10,000 target rows, advance the job): time and number of queries, next to the same claim
  for a job reaching 10 users — the query count does not grow with the targets;
- the drain: 10,000 ``enqueue_message`` calls (one queue job per user; the agent writes
  each reply): time, queries per message, jobs per second;
- ``send_broadcast`` (the admin's and the command's path): time to create the 10,000 rows;
- the outbox (SPEC §22): one reply row per job of the first push (what each ``complete``
  writes), then the real sender draining them for ``BROADCAST_DRAIN_SECONDS`` (20) against a
  loopback fake Telegram that refuses (429) anything faster than 30/s per bot or 1/s per
  chat: messages/s per bot next to the 30/s limit, the busiest second, and for a second bot
  with 10 chats × a 3-part reply, the smallest gap between two messages to one chat.

    .venv/bin/python bench/broadcast.py            # BROADCAST_USERS=10000 by default
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/af_bench_broadcast")

from _common import reset_database, setup_django  # noqa: E402

USERS = int(os.environ.get("BROADCAST_USERS", "10000"))
DRAIN_SECONDS = float(os.environ.get("BROADCAST_DRAIN_SECONDS", "20"))
DIGEST = "Good morning! Your **digest** is ready."


def make_users(agent, prefix: str, count: int) -> None:
    from telegram.models import IdentityBinding

    IdentityBinding.objects.bulk_create(
        (
            IdentityBinding(
                consumer_user_id=f"{prefix}-{n}",
                agent=agent,
                tenant_id=agent.tenant_id,
                conversation_id=f"user-agent:{agent.agent_key}:{prefix}-{n}",
                bot_identity="100",
                telegram_user_id=str(10_000_000 + n),
                telegram_chat_id=str(10_000_000 + n),
                source="telegram_pairing",
            )
            for n in range(count)
        ),
        batch_size=5000,
    )


class QueryCounter:
    """Counts statements through the connection (no query log: 10,000s of them)."""

    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)

    def __enter__(self):
        from django.db import connection

        self._cm = connection.execute_wrapper(self)
        self._cm.__enter__()
        return self

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def timed_claim(now):
    from agents.pushing.dispatch import claim_due_runs

    with QueryCounter() as counter:
        started = time.perf_counter()
        report = claim_due_runs(now)
        elapsed = time.perf_counter() - started
    return report, elapsed, counter.count


def main() -> None:
    reset_database()
    setup_django()
    import datetime as dt

    from django.utils import timezone

    from agents.models import AgentProfile, RuntimeConfig
    from agents.pushing.dispatch import drain_pending
    from agents.pushing.models import PushBroadcastDispatch
    from agents.pushing.services import save_push_job, send_broadcast
    from workers.models import Message

    RuntimeConfig.get()
    small, big = (AgentProfile.objects.create(agent_key=k) for k in ("small", "big"))
    make_users(small, "s", 10)
    make_users(big, "b", USERS)
    now = timezone.now()
    before = now - dt.timedelta(days=1)
    for agent in (small, big):
        job = save_push_job(
            actor="bench",
            target="agent_users",
            agent_key=agent.agent_key,
            text="Your morning digest is ready.",
            periodicity="daily",
            timezone_name="Europe/Rome",
            schedule={"time": "08:00"},
            now=before,
        )
        job.enabled = agent is small  # claim one at a time
        job.save()

    report, seconds, queries = timed_claim(now)
    print(f"claim, 10 targets:      {seconds * 1000:8.1f} ms, {queries} queries, {report}")
    drain_pending(budget_seconds=3600)
    from agents.pushing.models import PushJob

    PushJob.objects.filter(agent=small).update(enabled=False)
    PushJob.objects.filter(agent=big).update(enabled=True, next_run_at=now)
    report, seconds, claim_queries = timed_claim(now)
    print(f"claim, {USERS:,} targets: {seconds * 1000:8.1f} ms, {claim_queries} queries, {report}")

    with QueryCounter() as counter:
        started = time.perf_counter()
        drained = drain_pending(budget_seconds=3600)
        seconds = time.perf_counter() - started
    made = Message.objects.filter(agent_key="big").count()
    print(
        f"drain: {drained['enqueued']:,} queue jobs in {seconds:.2f} s "
        f"({drained['enqueued'] / seconds:,.0f} jobs/s), "
        f"{counter.count / max(1, drained['enqueued']):.2f} queries per job, "
        f"failed {drained['enqueue_failed']}; queue rows for 'big': {made:,}"
    )

    started = time.perf_counter()
    broadcast = send_broadcast("A policy update.", actor="bench", agent_keys=["big"])
    seconds = time.perf_counter() - started
    rows = PushBroadcastDispatch.objects.filter(broadcast=broadcast).count()
    print(f"send_broadcast: {rows:,} target rows created in {seconds * 1000:.0f} ms")
    started = time.perf_counter()
    drained = drain_pending(budget_seconds=3600)
    seconds = time.perf_counter() - started
    print(
        f"drain (conversations exist now): {drained['enqueued']:,} jobs in {seconds:.2f} s "
        f"({drained['enqueued'] / seconds:,.0f} jobs/s)"
    )

    outbox_drain()


def write_reply_rows(agent_key: str, jobs: int, parts: int) -> int:
    """The rows ``complete`` writes for each job's reply (bulk: the complete path itself is
    measured by the claim benchmarks)."""
    from telegram.formatting import reply_parts
    from telegram.outbox_models import OutboxMessage
    from workers.models import Message

    part = reply_parts(DIGEST)[0]
    rows = [
        OutboxMessage(
            agent_key=agent_key,
            chat_id=str(payload["metadata"]["telegram_chat_id"]),
            job_id=pk,
            part=index,
            parts=parts,
            text=part.text,
            parse_mode=part.parse_mode,
            plain_text=part.plain_text,
        )
        for pk, payload in Message.objects.filter(agent_key=agent_key)
        .order_by("id")
        .values_list("pk", "payload")[:jobs]
        for index in range(parts)
    ]
    # Parts of one job are consecutive ids, as one complete writes them.
    OutboxMessage.objects.bulk_create(rows, batch_size=2000)
    return len(rows)


def outbox_drain() -> None:
    import threading

    from outbox_drain import BOT_LIMIT, FakeTelegram, drain_for

    from telegram.outbox_models import OutboxMessage

    started = time.perf_counter()
    written = write_reply_rows("big", USERS, parts=1)
    seconds = time.perf_counter() - started
    print(f"outbox: {written:,} reply rows for 'big' written in {seconds:.2f} s")
    write_reply_rows("small", 10, parts=3)
    results: dict = {}
    with FakeTelegram() as fake:
        threads = [
            threading.Thread(
                target=drain_for, args=(key, token, fake.url, DRAIN_SECONDS, results)
            )
            for key, token in (("big", "200:big-bot"), ("small", "100:small-bot"))
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        big, small = fake.figures("200"), fake.figures("100")
    left = OutboxMessage.objects.filter(agent_key="big", status=OutboxMessage.PENDING).count()
    print(f"outbox drain, {wall:.1f} s (bounded at {DRAIN_SECONDS:g} s), sender counts {results}")
    print(
        f"  bot 'big' (one message per chat): {big['sent']:,} sent, {big['rate']:.1f} msg/s "
        f"(limit {BOT_LIMIT}/s, {big['rate'] / BOT_LIMIT:.0%} of it), busiest second "
        f"{big['busiest_second']}, 429s {big['refused_429']}; {left:,} left "
        f"(≈ {left / max(big['rate'], 0.1) / 60:.1f} min more at this rate)"
    )
    gap = small["min_chat_gap"]
    print(
        f"  bot 'small' (10 chats × 3 parts): {small['sent']} sent, {small['rate']:.1f} msg/s, "
        f"smallest gap within a chat {gap:.3f} s (limit ≥ 1 s), 429s {small['refused_429']}"
        if gap is not None
        else f"  bot 'small': {small['sent']} sent"
    )


if __name__ == "__main__":
    main()
