"""Harness of the scale-out proof (SPEC §24, tests/e2e/test_scale_out.py).

It starts the system the way an operator would, on loopback: gunicorn servers and
django-q2 clusters (Redis broker) over one PostgreSQL database, the local provider spawning
``run_worker`` processes, and the Telegram sandbox served by the app recording every reply.
It talks to the system only through HTTP (signed webhook posts), management commands,
process signals and database reads, so it keeps working while the internals change.

Pieces: ``ScaleConfig`` (sizes and timers, from ``SCALE_*`` environment variables),
``Fleet`` (the processes), ``Load`` (webhook traffic), ``Chaos`` (SIGKILLs worker
processes), ``Sampler`` (live workers over time) and the pure checks ``parse_trace``,
``reconcile_overlaps`` and ``reply_report``.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

BASE_DIR = Path(__file__).resolve().parents[2]


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


@dataclass(frozen=True)
class ScaleConfig:
    """Sizes and timers; every field has a ``SCALE_<NAME>`` environment override."""

    updates: int = 2000
    conversations: int = 200
    max_workers: int = 10
    kills: int = 20
    # Conversations posted to but not fully answered yet, at most (closed-loop load: the
    # backlog stays bounded, so the end of the run waits on no slow schedule).
    window: int = 6
    # Between two updates of one user: 10 updates take ~3.5 s, under the default quota
    # (burst 10, 20 per minute per user).
    user_spacing: float = 0.35
    # Load plus drain; the whole test (start-up and teardown included) must stay < 8 min.
    deadline: float = 400.0
    servers: int = 2
    clusters: int = 2
    gunicorn_workers: int = 3
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
            q_workers=_env_int("SCALE_Q_WORKERS", cls.q_workers),
            seed=_env_int("SCALE_SEED", secrets.randbelow(10**6)),
        )

    def updates_of(self, conversation: int) -> int:
        """Updates are spread evenly: the first ``updates % conversations`` get one more."""
        base, extra = divmod(self.updates, self.conversations)
        return base + (1 if conversation < extra else 0)


# Pure checks ---------------------------------------------------------------------------


@dataclass
class Pass:
    pid: int
    pass_id: str
    begin: int
    end: int | None = None


def parse_trace(lines) -> list[Pass]:
    """Reconcile passes from ``AGENT_FACTORY_RECONCILE_TRACE_FILE`` lines
    (``<monotonic ns> <pid> <pass id> <begin|end>``), in order of their beginning."""
    passes: dict[str, Pass] = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 4:
            continue
        stamp, pid, pass_id, event = int(parts[0]), int(parts[1]), parts[2], parts[3]
        if event == "begin":
            passes[pass_id] = Pass(pid=pid, pass_id=pass_id, begin=stamp)
        elif event == "end" and pass_id in passes:
            passes[pass_id].end = stamp
    return sorted(passes.values(), key=lambda p: p.begin)


def reconcile_overlaps(passes: list[Pass]) -> list[tuple[Pass, Pass]]:
    """Pairs of passes that ran at the same time. A pass without an end counts as still
    running (so anything that began after it overlaps it)."""
    overlaps = []
    running: Pass | None = None  # the pass that ends last among those seen so far
    for current in passes:
        if running is not None and (running.end is None or current.begin <= running.end):
            overlaps.append((running, current))
        if running is None or running.end is not None and (
            current.end is None or current.end > running.end
        ):
            running = current
    return overlaps


@dataclass
class ReplyReport:
    lost: list[tuple[str, str]] = field(default_factory=list)
    out_of_order: list[tuple[str, list[str]]] = field(default_factory=list)
    answered_twice: Counter = field(default_factory=Counter)
    unexpected: list[tuple[str, str]] = field(default_factory=list)


def reply_report(expected: dict[str, list[str]], received: dict[str, list[str]]) -> ReplyReport:
    """Compare the replies each chat received (in arrival order) with the texts it sent
    (in sending order): lost ones, replies out of order, extra copies, and replies that do
    not belong to the chat at all."""
    report = ReplyReport()
    for chat, sent in expected.items():
        position = {text: index for index, text in enumerate(sent)}
        got = received.get(chat, [])
        for text in sent:
            if text not in got:
                report.lost.append((chat, text))
        highest = -1
        for text in got:
            index = position.get(text)
            if index is None:
                report.unexpected.append((chat, text))
                continue
            if index < highest:
                report.out_of_order.append((chat, got))
                break
            highest = index
        for text, count in Counter(t for t in got if t in position).items():
            if count > 1:
                report.answered_twice[text] = count - 1
    for chat, got in received.items():
        if chat not in expected:
            report.unexpected.extend((chat, text) for text in got)
    return report


# Processes ---------------------------------------------------------------------------


def worker_processes(api_urls: set[str]) -> dict[int, str]:
    """Live local worker processes talking to one of ``api_urls``: pid → worker id. Found
    by their environment, which the local provider always sets (zombies have none)."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        if b"AGENT_FACTORY_WORKER_ID=" not in raw:
            continue
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        worker_id = env.get(b"AGENT_FACTORY_WORKER_ID")
        if worker_id and env.get(b"AGENT_FACTORY_API_URL", b"").decode() in api_urls:
            found[int(entry.name)] = worker_id.decode()
    return found


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def database_url(settings_dict: dict) -> str:
    """The ``DATABASE_URL`` of a Django PostgreSQL connection (the test database)."""
    from urllib.parse import quote

    user = quote(settings_dict.get("USER") or "")
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{quote(password)}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


def redis_available(url: str) -> str | None:
    """None when Redis answers at ``url``, else why not."""
    import redis

    try:
        redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except Exception as exc:
        return f"Redis is not reachable at {url}: {type(exc).__name__}: {exc}"
    return None


class Fleet:
    """The system under test: ``servers`` gunicorn servers and ``clusters`` qcluster
    processes with their environment; clusters spawn local workers, each cluster's
    workers call back to (and send Telegram messages through) one server."""

    def __init__(self, config: ScaleConfig, root: Path, db_url: str, redis_url: str):
        self.config = config
        self.root = root
        self.q_name = f"af-scale-{os.getpid()}-{secrets.token_hex(3)}"
        self.redis_url = redis_url
        self.trace_file = root / "reconcile-trace.log"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.sockets = []
        for _ in range(config.servers):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sock.listen(256)
            sock.set_inheritable(True)
            self.sockets.append(sock)
        self.urls = [f"http://127.0.0.1:{s.getsockname()[1]}" for s in self.sockets]
        self.base_env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.e2e.scale_settings",
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "SCALE_Q_NAME": self.q_name,
            "DEBUG": "0",
            # The opt-outs of https-only production defaults (loopback, plain http).
            "SECURE_SSL_REDIRECT": "0",
            "SECURE_HSTS_SECONDS": "0",
            "SESSION_COOKIE_SECURE": "0",
            "CSRF_COOKIE_SECURE": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "AGENT_FACTORY_TELEGRAM_SANDBOX": "1",
            "AGENT_FACTORY_VAR_DIR": str(root / "var"),
            # Shared: a snapshot goes up through one server and down through the other.
            "MEDIA_ROOT": str(root / "media"),
            "PUBLIC_BASE_URL": self.urls[0],
            "WORKER_PROVIDER": "local",
            "AGENT_FACTORY_RECONCILE_TRACE_FILE": str(self.trace_file),
            "LOG_LEVEL": "WARNING",
            "Q_WORKERS": str(config.q_workers),
            # Workers poll twice a second when idle and exit after 2 s without a job (the
            # runtime config's idle timeout is 10 s at least); the server's system checks
            # are skipped (a third of a worker's start-up, and about the server anyway).
            "SCALE_WORKER_ARGS": (
                "--skip-checks --poll-seconds 0.5 --idle-exit-seconds 2 --heartbeat-seconds 2"
            ),
        }
        self.servers: list[subprocess.Popen] = []
        self.clusters: list[subprocess.Popen] = []

    def env_for(self, index: int) -> dict:
        """Process ``index`` talks to server ``index`` (mod the number of servers)."""
        url = self.urls[index % len(self.urls)]
        return {
            **self.base_env,
            "TELEGRAM_API_BASE_URL": f"{url}/sandbox/telegram",
            "AGENT_FACTORY_WORKER_API_URL": url,
        }

    def _start(self, argv, index: int, name: str, **kwargs) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115
        try:
            return subprocess.Popen(
                argv,
                env=self.env_for(index),
                cwd=str(BASE_DIR),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: teardown signals all its children
                **kwargs,
            )
        finally:
            log.close()

    def start_servers(self, timeout: float = 60) -> None:
        for index, sock in enumerate(self.sockets):
            argv = [
                sys.executable, "-m", "gunicorn", "config.wsgi",
                "--bind", f"fd://{sock.fileno()}",
                "--workers", str(self.config.gunicorn_workers),
                "--timeout", "60", "--graceful-timeout", "5", "--log-level", "warning",
            ]  # fmt: skip
            self.servers.append(
                self._start(argv, index, f"gunicorn-{index}", pass_fds=(sock.fileno(),))
            )
        for sock in self.sockets:
            sock.close()  # the servers hold the listening sockets now
        deadline = time.monotonic() + timeout
        for url, process in zip(self.urls, self.servers, strict=True):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"gunicorn for {url} exited; see {self.logs}")
                try:
                    if requests.get(f"{url}/healthz/", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn for {url} did not answer; see {self.logs}")
                time.sleep(0.2)

    def start_clusters(self) -> None:
        for index in range(self.config.clusters):
            argv = [sys.executable, str(BASE_DIR / "manage.py"), "qcluster"]
            self.clusters.append(self._start(argv, index, f"qcluster-{index}"))

    def command(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        """Run ``manage.py <args>`` like an operator; returns stdout, raises on failure."""
        done = subprocess.run(
            [sys.executable, str(BASE_DIR / "manage.py"), *args],
            env=self.env_for(0),
            cwd=str(BASE_DIR),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def worker_processes(self) -> dict[int, str]:
        return worker_processes(set(self.urls))

    def alive(self) -> list[str]:
        """Names of the servers and clusters that died (the run is void without them)."""
        dead = [f"gunicorn-{i}" for i, p in enumerate(self.servers) if p.poll() is not None]
        dead += [f"qcluster-{i}" for i, p in enumerate(self.clusters) if p.poll() is not None]
        return dead

    def stop(self) -> None:
        """Clusters first (no more spawns), then every worker process, then the servers;
        finally this run's Redis keys. Safe to call twice."""
        _stop_all(self.clusters, grace=10)
        for _ in range(50):
            found = self.worker_processes()
            if not found:
                break
            for pid in found:
                _signal_group(pid, signal.SIGKILL)
            time.sleep(0.1)
        _stop_all(self.servers, grace=10)
        try:
            import redis

            client = redis.from_url(self.redis_url, socket_timeout=5)
            keys = list(client.scan_iter(match=f"django_q:{self.q_name}:*", count=500))
            if keys:
                client.delete(*keys)
        except Exception:  # Redis gone: nothing of ours to clean there
            pass


def _stop_all(processes: list[subprocess.Popen], grace: float) -> None:
    for process in processes:
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(process.pid, signal.SIGKILL)  # stragglers, and children left behind
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


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

    def __init__(self, config: ScaleConfig, urls: list[str], path: str, secret: str, answered):
        self.config = config
        self.urls = urls
        self.path = path
        self.secret = secret
        self.answered = answered  # () -> {chat: number of distinct replies}
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
        self.finished_posting = threading.Event()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2 * config.window + 4)

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

        A new conversation starts while fewer than ``window`` are unanswered, or while none
        is posting and fewer than twice that are unanswered: enqueues are what trigger
        reconcile passes between the one-minute schedules, so traffic never pauses while
        conversations wait for a worker."""
        sessions: list[threading.Thread] = []
        pending = list(self.conversations)
        done_chats: set[str] = set()
        last_progress = time.monotonic()
        while pending and time.monotonic() < deadline:
            counts = self.answered()
            done_chats.update(
                c.chat for c in self.conversations[: self.started]
                if counts.get(c.chat, 0) >= len(c.texts)
            )  # fmt: skip
            in_flight = self.started - len(done_chats)
            posting = sum(thread.is_alive() for thread in sessions)
            while pending and (
                in_flight < self.config.window
                or (posting == 0 and in_flight < 2 * self.config.window)
            ):
                conversation = pending.pop(0)
                thread = threading.Thread(target=self._session, args=(conversation,), daemon=True)
                thread.start()
                sessions.append(thread)
                self.started += 1
                in_flight += 1
                posting += 1
            if progress and time.monotonic() - last_progress >= 10:
                last_progress = time.monotonic()
                progress(
                    f"posted {self.posted}/{self.total()} updates; conversations: "
                    f"{self.started} started, {len(done_chats)} answered, {posting} posting"
                )
            time.sleep(0.3)
        for thread in sessions:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.finished_posting.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


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
                _signal_group(pid, signal.SIGKILL)
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
    against ``max_workers``), live worker processes, and the most messages processing at
    once in one conversation."""

    def __init__(self, fleet: Fleet, interval: float = 0.5):
        super().__init__(daemon=True, name="sampler")
        self.fleet = fleet
        self.interval = interval
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
                self.samples += 1
        finally:
            connection.close()
