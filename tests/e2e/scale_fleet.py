"""The processes of the scale-out proof (tests/e2e/test_scale_out.py), started the way an
operator would start them, on loopback with ephemeral ports: gunicorn servers and
django-q2 clusters (Redis broker) over one PostgreSQL database; the clusters' reconcile
spawns local ``run_worker`` processes; the Telegram sandbox served by the app records the
replies. Only HTTP, management commands, signals and /proc are used here."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import requests

BASE_DIR = Path(__file__).resolve().parents[2]
# Workers poll twice a second when idle and exit after 2 s without a job (the runtime
# config's idle timeout is 10 s at least). run_worker runs no system checks of its own.
WORKER_ARGS = "--poll-seconds 0.5 --idle-exit-seconds 2 --heartbeat-seconds 2"


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


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when the test process dies, so a
    test runner killed with SIGKILL leaves no server or cluster behind (their workers
    exit on their own: 2 s without a job)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def database_url(settings_dict: dict) -> str:
    """The ``DATABASE_URL`` of a Django PostgreSQL connection (the test database)."""
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
    """``servers`` gunicorn servers and ``clusters`` qcluster processes sharing one
    environment; cluster ``i``'s workers call back to, and send Telegram messages through,
    server ``i`` (mod the number of servers)."""

    def __init__(
        self,
        root: Path,
        db_url: str,
        redis_url: str,
        *,
        servers: int = 2,
        clusters: int = 2,
        gunicorn_workers: int = 3,
        gunicorn_threads: int = 6,
        q_workers: int = 2,
    ):
        self.root = root
        self.db_name = db_url.rsplit("/", 1)[1]
        self.redis_url = redis_url
        # django-q2 keys in Redis are named after the cluster name: one per run, so runs
        # sharing a Redis never take each other's tasks, and teardown deletes only ours.
        self.q_name = f"af-scale-{os.getpid()}-{secrets.token_hex(3)}"
        self.cluster_count = clusters
        self.gunicorn_workers = gunicorn_workers
        self.gunicorn_threads = gunicorn_threads
        self.trace_file = root / "reconcile-trace.log"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        # Bound here and handed to gunicorn (fd://): ephemeral ports without a race.
        self.sockets = []
        for _ in range(servers):
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
            "SCALE_WORKER_ARGS": WORKER_ARGS,
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
            "Q_WORKERS": str(q_workers),
        }
        self.servers: list[subprocess.Popen] = []
        self.clusters: list[subprocess.Popen] = []

    def env_for(self, index: int) -> dict:
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
                preexec_fn=_die_with_parent,
                **kwargs,
            )
        finally:
            log.close()

    def start_servers(self, timeout: float = 60) -> None:
        for index, sock in enumerate(self.sockets):
            argv = [
                sys.executable, "-m", "gunicorn", "config.wsgi",
                "--bind", f"fd://{sock.fileno()}",
                "--workers", str(self.gunicorn_workers),
                # Threads as in production (SPEC §24): idle workers hold a request each while
                # their claim long-polls, so sync workers would leave the webhook none.
                "--threads", str(self.gunicorn_threads),
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
        for index in range(self.cluster_count):
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

    def dead(self) -> list[str]:
        """The servers and clusters that exited (the run is void without them)."""
        found = [f"gunicorn-{i}" for i, p in enumerate(self.servers) if p.poll() is not None]
        found += [f"qcluster-{i}" for i, p in enumerate(self.clusters) if p.poll() is not None]
        return found

    def stop(self) -> None:
        """Clusters first (no more spawns), then every worker process, then the servers;
        finally this run's Redis keys. Safe to call twice."""
        _stop_all(self.clusters, grace=10)
        for _ in range(50):
            found = self.worker_processes()
            if not found:
                break
            for pid in found:
                signal_group(pid, signal.SIGKILL)
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
            signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        signal_group(process.pid, signal.SIGKILL)  # stragglers, and children left behind
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class CpuMeter:
    """CPU seconds used by the system under test, by part: servers and clusters (their
    process groups), workers, and the PostgreSQL backends serving its database. Sampled
    from /proc (a process's last moments before it exits between two samples are missed,
    so this is a slight underestimate)."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.ticks: dict[int, tuple[str, int]] = {}
        self.clock = os.sysconf("SC_CLK_TCK")

    def sample(self) -> None:
        groups = {p.pid: "servers" for p in self.fleet.servers}
        groups.update({p.pid: "clusters" for p in self.fleet.clusters})
        workers = set(self.fleet.worker_processes())
        marker = f" {self.fleet.db_name} ".encode()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            group, ticks = int(fields[2]), int(fields[11]) + int(fields[12])
            part = groups.get(group) or ("workers" if pid in workers else None)
            if part is None:
                try:
                    cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                if not (cmdline.startswith(b"postgres:") and marker in cmdline):
                    continue
                part = "postgres"
            self.ticks[pid] = (part, max(ticks, self.ticks.get(pid, (part, 0))[1]))

    def seconds(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for part, ticks in self.ticks.values():
            totals[part] = totals.get(part, 0.0) + ticks / self.clock
        return {part: round(value, 1) for part, value in sorted(totals.items())}
