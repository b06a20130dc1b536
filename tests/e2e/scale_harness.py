"""Load, chaos and sampling of the scale-out proof (SPEC §24, tests/e2e/test_scale_out.py).

``ScaleConfig`` holds sizes and timers (``SCALE_*`` environment variables); ``Load`` posts
signed webhook updates with racing redeliveries; ``Chaos`` SIGKILLs worker processes;
``Sampler`` watches live workers, one-job-per-conversation and CPU use. The processes are
in ``scale_fleet``, the pure checks in ``scale_checks``.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from tests.e2e.scale_fleet import CpuMeter, Fleet, signal_group


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


@dataclass(frozen=True)
class ScaleConfig:
    """Sizes and timers; each has a ``SCALE_<NAME>`` environment override, except the
    number of servers and clusters (the proof is about two of each). The seed chooses the
    kills (timing is never replayable exactly)."""

    updates: int = 2000
    conversations: int = 200
    max_workers: int = 10
    kills: int = 20
    # Conversations in flight (posting, or with messages not done yet), at most: a
    # closed-loop load keeps the backlog bounded, so the end of the run waits on no slow
    # schedule.
    window: int = 6
    # Between two updates of one user: 10 updates take ~3.5 s, under the default quota
    # (burst 10, 20 per minute per user).
    user_spacing: float = 0.35
    # Load plus drain; the whole test (start-up and teardown included) must stay < 8 min.
    # The server now also sends every reply and the typing actions (SPEC §22) on the same
    # two CPUs: a full run measured 372 s of load (390 s in all) with long-poll claims.
    deadline: float = 450.0
    servers: int = 2
    clusters: int = 2
    gunicorn_workers: int = 3
    gunicorn_threads: int = 6
    q_workers: int = 2
    seed: int = 0

    @classmethod
    def from_env(cls) -> ScaleConfig:
        return cls(
            updates=_env_int("SCALE_UPDATES", cls.updates),
            conversations=_env_int("SCALE_CONVERSATIONS", cls.conversations),
            max_workers=_env_int("SCALE_MAX_WORKERS", cls.max_workers),
            kills=_env_int("SCALE_KILLS", cls.kills),
            window=_env_int("SCALE_WINDOW", cls.window),
            user_spacing=_env_float("SCALE_USER_SPACING", cls.user_spacing),
            deadline=_env_float("SCALE_DEADLINE", cls.deadline),
            gunicorn_workers=_env_int("SCALE_GUNICORN_WORKERS", cls.gunicorn_workers),
            gunicorn_threads=_env_int("SCALE_GUNICORN_THREADS", cls.gunicorn_threads),
            q_workers=_env_int("SCALE_Q_WORKERS", cls.q_workers),
            seed=_env_int("SCALE_SEED", secrets.randbelow(10**6)),
        )

    def updates_of(self, conversation: int) -> int:
        """Updates are spread evenly: the first ``updates % conversations`` get one more."""
        base, extra = divmod(self.updates, self.conversations)
        return base + (1 if conversation < extra else 0)


# Load ------------------------------------------------------------------------------


@dataclass
class Conversation:
    index: int
    user_id: int
    texts: list[str]

    @property
    def chat(self) -> str:
        return str(self.user_id)


class Load:
    """Closed-loop webhook traffic: at most ``window`` conversations in flight; each one a
    private chat of its own Telegram user, posting its updates ``user_spacing`` apart. Every
    update goes to one server and, at the same moment, to the other (a redelivery racing
    the original), alternating which server gets it first."""

    def __init__(self, config: ScaleConfig, urls: list[str], path: str, secret: str, unfinished):
        self.config = config
        self.urls = urls
        self.path = path
        self.secret = secret
        self.unfinished = unfinished  # () -> {Telegram user ids with messages not done}
        run_tag = secrets.token_hex(2)
        self.conversations = [
            Conversation(
                index=i,
                user_id=7_000_000 + i,
                texts=[f"scale {run_tag} c{i:03d} #{n:02d}" for n in range(config.updates_of(i))],
            )
            for i in range(config.conversations)
        ]
        self.statuses: dict[int, list[str]] = {}
        self.retries = Counter()
        self.posted = 0  # updates whose two posts were answered
        self.started = 0
        self.stop = threading.Event()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        # Every session posting (up to twice the window) has its two posts in flight at once.
        self._pool = ThreadPoolExecutor(max_workers=4 * config.window + 4)

    @property
    def expected(self) -> dict[str, list[str]]:
        return {c.chat: c.texts for c in self.conversations}

    def total(self) -> int:
        return sum(len(c.texts) for c in self.conversations)

    def _post(self, server: int, update: dict) -> str:
        url = f"{self.urls[server]}{self.path}"
        body = json.dumps(update)
        headers = {
            "X-Telegram-Bot-Api-Secret-Token": self.secret,
            "Content-Type": "application/json",
        }
        for attempt in range(20):
            try:
                response = requests.post(url, data=body, headers=headers, timeout=30)
            except requests.RequestException as exc:
                reason = type(exc).__name__
            else:
                if response.status_code == 200:
                    return response.json().get("status", "?")
                reason = f"http {response.status_code}"
            # What Telegram does: deliver again later (503 means "retry", nothing lost).
            with self._lock:
                self.retries[reason] += 1
            time.sleep(min(2.0, 0.1 * 2**attempt))
        return f"gave up ({reason})"

    def _session(self, conversation: Conversation) -> None:
        try:
            for seq, text in enumerate(conversation.texts):
                if self.stop.is_set():
                    return
                started = time.monotonic()
                update_id = 10_000_000 + conversation.index * 1000 + seq
                update = {
                    "update_id": update_id,
                    "message": {
                        "message_id": seq + 1,
                        "from": {"id": conversation.user_id, "is_bot": False, "first_name": "S"},
                        "chat": {"id": conversation.user_id, "type": "private"},
                        "date": int(time.time()),
                        "text": text,
                    },
                }
                first = (conversation.index + seq) % len(self.urls)
                second = (first + 1) % len(self.urls)
                # The next update of this chat is posted only once both are answered: the
                # order the server accepted them in is the order replies must come in.
                futures = [self._pool.submit(self._post, s, update) for s in (first, second)]
                statuses = sorted(f.result() for f in futures)
                with self._lock:
                    self.statuses[update_id] = statuses
                    self.posted += 1
                pause = self.config.user_spacing - (time.monotonic() - started)
                if pause > 0:
                    time.sleep(pause)
        except Exception as exc:  # reported by the test, never a silent hang
            with self._lock:
                self.errors.append(f"conversation {conversation.index}: {exc!r}")

    def run(self, deadline: float, progress=None) -> None:
        """Post everything (returns when every session has posted, or at ``deadline``).

        A new conversation starts while fewer than ``window`` are in flight, or while none
        is posting and fewer than twice that are in flight: enqueues are what trigger
        reconcile passes between the one-minute schedules, so traffic never pauses while
        conversations wait for a worker."""
        sessions: dict[str, threading.Thread] = {}
        pending = list(self.conversations)
        finished: set[str] = set()
        last_progress = time.monotonic()
        while pending and time.monotonic() < deadline:
            unfinished = self.unfinished()
            finished.update(
                user for user, thread in sessions.items()
                if not thread.is_alive() and user not in unfinished
            )  # fmt: skip
            in_flight = len(sessions) - len(finished)
            posting = sum(thread.is_alive() for thread in sessions.values())
            while pending and (
                in_flight < self.config.window
                or (posting == 0 and in_flight < 2 * self.config.window)
            ):
                conversation = pending.pop(0)
                thread = threading.Thread(target=self._session, args=(conversation,), daemon=True)
                thread.start()
                sessions[str(conversation.user_id)] = thread
                self.started += 1
                in_flight += 1
                posting += 1
            if progress and time.monotonic() - last_progress >= 10:
                last_progress = time.monotonic()
                progress(
                    f"posted {self.posted}/{self.total()} updates; conversations: "
                    f"{self.started} started, {len(finished)} finished, {posting} posting"
                )
            time.sleep(0.3)
        for thread in sessions.values():
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.stop.set()  # past the deadline: the sessions still running post no more
        for thread in sessions.values():
            thread.join(timeout=35)
        self._pool.shutdown(wait=True)


# Chaos and sampling ------------------------------------------------------------------


@dataclass
class Kill:
    at: float
    worker_id: str
    pid: int
    jobs: set[int]  # messages the worker held a lease on when it was killed


class Chaos(threading.Thread):
    """SIGKILLs ``count`` random live worker processes, each at a random moment: when the
    load passes a random fraction (between 5 % and 85 %) of its updates, plus up to 1 s.
    Records which message each victim was processing, read just before and just after."""

    def __init__(self, fleet: Fleet, load: Load, count: int, rng: random.Random):
        super().__init__(daemon=True, name="chaos")
        self.fleet = fleet
        self.load = load
        self.rng = rng
        self.marks = sorted(rng.uniform(0.05, 0.85) for _ in range(count))
        self.kills: list[Kill] = []
        self.halt = threading.Event()

    def run(self) -> None:
        from django.db import connection

        try:
            total = self.load.total()
            for mark in self.marks:
                while not self.halt.is_set() and self.load.posted < mark * total:
                    self.halt.wait(0.1)
                if self.halt.wait(self.rng.uniform(0, 1.0)):
                    return
                self._kill_one()
        finally:
            connection.close()

    def _kill_one(self) -> None:
        for _ in range(50):  # a victim may be missing for a moment (all between spawns)
            victims = self.fleet.worker_processes()
            if victims:
                pid = self.rng.choice(sorted(victims))
                worker_id = victims[pid]
                before = _processing_of(worker_id)
                signal_group(pid, signal.SIGKILL)
                jobs = before | _processing_of(worker_id)
                self.kills.append(Kill(time.monotonic(), worker_id, pid, jobs))
                return
            if self.halt.wait(0.2):
                return


def _processing_of(worker_id: str) -> set[int]:
    from workers.models import Message

    return set(
        Message.objects.filter(status=Message.PROCESSING, claimed_by=worker_id).values_list(
            "pk", flat=True
        )
    )


class Sampler(threading.Thread):
    """Samples, every ``interval`` seconds: worker rows not yet stopped (what counts
    against ``max_workers``), live worker processes, the most messages processing at once
    in one conversation, and the CPU used by the system under test."""

    def __init__(self, fleet: Fleet, interval: float = 0.5):
        super().__init__(daemon=True, name="sampler")
        self.fleet = fleet
        self.interval = interval
        self.cpu = CpuMeter(fleet)
        self.max_rows = self.max_processes = self.max_processing_per_conversation = 0
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        from django.db import connection
        from django.db.models import Count

        from workers.models import Message, Worker

        try:
            while not self.halt.wait(self.interval):
                rows = Worker.objects.exclude(status=Worker.STOPPED).count()
                processes = len(self.fleet.worker_processes())
                busiest = (
                    Message.objects.filter(status=Message.PROCESSING)
                    .values("conversation_id")
                    .annotate(n=Count("id"))
                    .order_by("-n")
                    .values_list("n", flat=True)
                    .first()
                ) or 0
                self.max_rows = max(self.max_rows, rows)
                self.max_processes = max(self.max_processes, processes)
                self.max_processing_per_conversation = max(
                    self.max_processing_per_conversation, busiest
                )
                self.cpu.sample()
                self.samples += 1
        finally:
            connection.close()
