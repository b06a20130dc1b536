"""PostgreSQL connections stay bounded under load (SPEC §18, issue 10 item 7).

16 concurrent clients × 500 claims each (a new HTTP connection per request, so the
threaded development server starts a thread per request) against ``runserver`` and against
gunicorn, on PostgreSQL, while another session samples ``pg_stat_activity``. With the pool
(``DATABASE_POOL_MAX_SIZE`` = 4 here) a server process never holds more than that many
connections: runserver ≤ 4, gunicorn with 2 worker processes ≤ 2 × 4 = 8 (16 threads each,
so the pool, not the thread count, is what bounds it); no request fails. A control run
without the pool (the old CONN_MAX_AGE=60) shows the same sampler seeing more (it stops as
soon as it does, so as not to take a shared server's connections from everyone else).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from workers.management.commands.run_embedded import _die_with_parent

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 16
REQUESTS_PER_CLIENT = 500
POOL_MAX = 4
GUNICORN_WORKERS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(application_name: str) -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    host = f"{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}"
    return f"postgres://{auth}@{host}/{s['NAME']}?application_name={application_name}"


class Sampler(threading.Thread):
    """Counts the server's sessions (by application name) every 20 ms, from the
    ``postgres`` database so its own session is not among them."""

    def __init__(self, database: str, application_name: str, stop_above: int | None = None):
        super().__init__(daemon=True)
        self.database, self.application_name = database, application_name
        self.samples: list[int] = []
        self.done = threading.Event()
        # Set once a sample exceeds ``stop_above``: the control run stops there rather
        # than take the shared server's connections away from everyone else.
        self.exceeded = threading.Event()
        self.stop_above = stop_above

    def run(self):
        s = connection.settings_dict
        with psycopg.connect(
            host=s["HOST"] or "127.0.0.1",
            port=s["PORT"] or 5432,
            user=s["USER"],
            password=s["PASSWORD"] or None,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            while not self.done.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = %s AND application_name = %s",
                    [self.database, self.application_name],
                ).fetchone()
                self.samples.append(row[0])
                if self.stop_above is not None and row[0] > self.stop_above:
                    self.exceeded.set()
                time.sleep(0.02)


def start_server(argv: list[str], application_name: str, port: int, settings_module: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        DJANGO_SETTINGS_MODULE=settings_module,
        DATABASE_URL=database_url(application_name),
        DATABASE_POOL_MIN_SIZE="2",
        DATABASE_POOL_MAX_SIZE=str(POOL_MAX),
        SECURE_SSL_REDIRECT="0",
        SECURE_HSTS_SECONDS="0",
    )
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,  # no server outlives a test run that was killed
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz/")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    stop(process)
    raise AssertionError(f"{argv[2:4]} did not start")


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, 15)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, 9)
        process.wait(timeout=10)


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU of the server's process group (for the report: wall time on a
    shared machine says little)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pid:  # process group
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def hammer(port: int, tokens: list[str], per_client: int, stop: threading.Event) -> Counter:
    statuses: Counter = Counter()
    lock = threading.Lock()

    def client(token: str):
        seen: Counter = Counter()
        for _ in range(per_client):
            if stop.is_set():
                break
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:  # a fresh connection per request: a new server thread per request
                conn.request(
                    "POST",
                    "/api/v1/worker/claim/",
                    body=b"{}",
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                        "Connection": "close",
                    },
                )
                response = conn.getresponse()
                body = response.read()
                seen[response.status] += 1
                if response.status == 200:
                    assert json.loads(body) == {"job": None}
            except OSError as exc:
                seen[type(exc).__name__] += 1
            finally:
                conn.close()
        with lock:
            statuses.update(seen)

    threads = [threading.Thread(target=client, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def run_load(
    make_worker, kind: str, *, settings_module="config.test_settings", per_client, stop_above=None
):
    tokens = [make_worker(f"{kind}-{i}")[1] for i in range(CLIENTS)]
    port = free_port()
    python = sys.executable
    if kind == "gunicorn":
        argv = [python, "-m", "gunicorn", "config.wsgi:application", "--bind"]
        argv += [f"127.0.0.1:{port}", "--workers", str(GUNICORN_WORKERS)]
        argv += ["--worker-class", "gthread", "--threads", str(CLIENTS)]
    else:
        argv = [python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    application_name = f"af-load-{kind}-{os.getpid()}"
    server = start_server(argv, application_name, port, settings_module)
    sampler = Sampler(connection.settings_dict["NAME"], application_name, stop_above)
    sampler.start()
    try:
        started = time.monotonic()
        statuses = hammer(port, tokens, per_client, sampler.exceeded)
        elapsed = time.monotonic() - started
    finally:
        sampler.done.set()
        sampler.join(timeout=5)
        cpu = server_cpu_seconds(server.pid)
        stop(server)
    print(
        f"{kind}: {sum(statuses.values())} requests in {elapsed:.1f} s (server CPU "
        f"{cpu:.1f} s, client CPU {time.process_time():.1f} s), statuses "
        f"{dict(statuses)}, connections max {max(sampler.samples)} over "
        f"{len(sampler.samples)} samples"
    )
    return statuses, max(sampler.samples)


def test_runserver_stays_within_the_pool(make_worker):
    statuses, peak = run_load(make_worker, "runserver", per_client=REQUESTS_PER_CLIENT)
    assert statuses == {200: CLIENTS * REQUESTS_PER_CLIENT}
    assert 0 < peak <= POOL_MAX


def test_gunicorn_stays_within_pool_times_processes(make_worker):
    statuses, peak = run_load(make_worker, "gunicorn", per_client=REQUESTS_PER_CLIENT)
    assert statuses == {200: CLIENTS * REQUESTS_PER_CLIENT}
    assert 0 < peak <= POOL_MAX * GUNICORN_WORKERS


def test_without_the_pool_runserver_exceeds_that_bound(make_worker):
    """The control: the sampler does see the problem the pool fixes."""
    _, peak = run_load(
        make_worker,
        "runserver",
        settings_module="tests.workers.load_settings_without_pool",
        per_client=50,
        stop_above=POOL_MAX * GUNICORN_WORKERS,
    )
    assert peak > POOL_MAX * GUNICORN_WORKERS
