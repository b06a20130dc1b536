"""The main job on one machine: migrate, demo admin, web server, django-q2 cluster.

The web server is gunicorn, as in production (SPEC §24); ``--dev`` serves with Django's
development server and its autoreload instead.

The local worker pool is not a child of this command: the reconcile schedule (run by the
django-q2 cluster) spawns ``run_worker`` processes through the local provider on demand.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

DEMO_USERNAME = "admin"


def stop_local_workers(grace_seconds: float | None = None) -> int:
    """Stop the local worker processes this machine still runs, all at once: they finish or
    release their job and snapshot through the web server, which must still be serving (the
    caller stops it afterwards); stragglers are killed so none outlives the server it talks
    to. Returns how many were signalled."""
    from workers.models import Worker
    from workers.providers.local import (
        process_exited,
        remove_data_dir,
        terminate_worker_processes,
    )

    workers = Worker.objects.filter(provider="local").exclude(status="stopped")
    signalled = terminate_worker_processes(list(workers), grace_seconds)
    deadline = time.monotonic() + 5  # a SIGKILLed one takes a moment to be gone
    for worker in signalled:
        while not process_exited(worker.process_id):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        else:
            remove_data_dir(worker.worker_id)
    return len(signalled)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for a SIGTERM when the parent dies, so a main job
    killed with SIGKILL leaves no server behind (elsewhere this is a no-op)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _close_database_pools() -> None:
    """Close this process's connections and PostgreSQL pools (and so the pool's threads)
    before forking children with a preexec_fn; they reopen on the next query."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        conn.close()
        if getattr(conn, "pool", None) is not None:
            conn.close_pool()


def start_child(argv: list[str]) -> subprocess.Popen:
    """Start a child in its own session: Ctrl+C (SIGINT to the terminal's process group) and
    a SIGTERM to our group reach only the supervisor, which then stops everything in order;
    the web server must outlive the workers, which snapshot through it."""
    # preexec_fn is unsafe with threads; this command starts its children before any (it
    # closes its database pools, which run threads, first).
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent)


def gunicorn_argv(python: str, host: str, port: int, workers: int, threads: int) -> list[str]:
    """gunicorn as in production (SPEC §24): ``workers`` processes of ``threads`` threads.
    On PostgreSQL each process holds at most DATABASE_POOL_MAX_SIZE connections. No access
    log: the sandbox's request paths carry bot tokens."""
    return [
        python,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        # Below the supervisor's wait, so gunicorn's own graceful stop finishes first.
        "--graceful-timeout",
        "10",
    ]


def ensure_demo_admin(password_file: Path) -> tuple[str, str, bool]:
    """Create the demo superuser once; its password lives in var/ so every start can print it."""
    user_model = get_user_model()
    if password_file.exists():
        password = password_file.read_text().strip()
    else:
        password = secrets.token_urlsafe(12)
    user = user_model.objects.filter(username=DEMO_USERNAME).first()
    created = user is None
    if created:
        user_model.objects.create_superuser(DEMO_USERNAME, "admin@example.com", password)
        password_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
    elif not password_file.exists():
        password = "(unchanged: the admin user existed before this demo password file)"
    return DEMO_USERNAME, password, created


def simulate_update_hint() -> str:
    """The demo command for a second terminal, with the environment it needs there.

    Another shell has none of scripts/run.sh's variables: without DEBUG the settings refuse
    to start (no SECRET_KEY), and on another port the command would post to :8000.
    """
    env = ["DEBUG=1"]
    if settings.PUBLIC_BASE_URL != "http://127.0.0.1:8000":
        env.append(f"PUBLIC_BASE_URL={settings.PUBLIC_BASE_URL}")
    return " ".join([*env, ".venv/bin/python manage.py simulate_update demo 'hello'"])


class Command(BaseCommand):
    help = "Run the whole system on this machine: web server, schedules and the local worker pool."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--dev",
            action="store_true",
            help="Serve with Django's development server and its autoreload instead of gunicorn.",
        )
        parser.add_argument(
            "--web-workers",
            type=int,
            default=int(os.environ.get("WEB_CONCURRENCY", "2")),
            help="gunicorn worker processes (default $WEB_CONCURRENCY or 2).",
        )
        parser.add_argument(
            "--web-threads",
            type=int,
            default=4,
            help="Threads per gunicorn worker (default 4).",
        )
        parser.add_argument(
            "--no-qcluster",
            action="store_true",
            help="Do not start the django-q2 cluster (schedules, triggers).",
        )

    def handle(self, *args, host, port, dev, web_workers, web_threads, no_qcluster, **options):
        if web_workers < 1 or web_threads < 1:
            raise CommandError("--web-workers and --web-threads must be at least 1.")
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database migrated.")
        if not settings.DEBUG:
            # WhiteNoise serves the admin's assets from STATIC_ROOT when DEBUG is off.
            call_command("collectstatic", interactive=False, verbosity=0)
        self._run_setup_hooks()
        username, password, _ = ensure_demo_admin(settings.VAR_DIR / "demo-admin-password")

        python = sys.executable
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        if dev:
            web = [python, manage, "runserver", f"{host}:{port}"]
        else:
            web = gunicorn_argv(python, host, port, web_workers, web_threads)
        _close_database_pools()
        # Ctrl+C/SIGTERM from here on only ask to stop: whenever it comes (even while
        # starting up) the children are stopped in order, never left behind.
        self._dev = dev
        self._install_stop_handlers()
        children: list[subprocess.Popen] = [start_child(web)]
        if not no_qcluster:
            children.append(start_child([python, manage, "qcluster"]))
        try:
            base = f"http://{host}:{port}"
            if self._wait_until_serving(base, children) and not self._stopping:
                self._run_poststart_hooks()
            if not self._stopping and children[0].poll() is None:
                self._announce(base, username, password)
                self._supervise(children)
        finally:
            self._stop_children(children)
        failed = [c for c in children if c.returncode not in (0, -signal.SIGTERM, None)]
        if failed and not self._stopping:
            raise CommandError("A child process exited unexpectedly; everything was stopped.")

    def _install_stop_handlers(self) -> None:
        self._stopping = False
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)

    def _request_stop(self, signum, frame) -> None:
        self._stopping = True

    def _announce(self, base: str, username: str, password: str) -> None:
        self.stdout.write(
            self.style.SUCCESS(
                f"\nAgent Factory is running at {base}/admin/\n"
                f"  demo admin: {username} / {password}\n"
            )
        )
        if settings.AGENT_FACTORY_TELEGRAM_SANDBOX:
            # The first thing to try: the sandbox chat (URL names only: workers does not
            # import telegram).
            chat = reverse("admin:telegram_sandbox_chat")
            self.stdout.write(
                "  Try it: chat with the demo bot as a Telegram user (sign in first):\n"
                f"    {base}{chat}\n"
                "  From a script, in another terminal:\n"
                f"    {simulate_update_hint()}\n"
                "  (replies also show under Telegram > Sandbox messages in the admin).\n"
            )
        self.stdout.write("Press Ctrl+C to stop.\n")

    def _run_setup_hooks(self) -> None:
        """Idempotent start-up steps other apps register (schedules, the Telegram sandbox)."""
        for name in getattr(settings, "AGENT_FACTORY_STARTUP_COMMANDS", []):
            call_command(name, verbosity=0)

    def _wait_until_serving(self, base: str, children, timeout: float = 60) -> bool:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopping:
            if children[0].poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{base}/healthz/", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return True
            except OSError:
                time.sleep(0.3)
        return False

    def _run_poststart_hooks(self) -> None:
        for name in settings.AGENT_FACTORY_POSTSTART_COMMANDS:
            try:
                call_command(name, verbosity=0, stdout=self.stdout)
            except CommandError as exc:
                self.stderr.write(f"{name}: {exc}")

    def _supervise(self, children: list[subprocess.Popen]) -> None:
        """Wait for Ctrl+C/SIGTERM or a child's death."""
        while not self._stopping:
            if any(child.poll() is not None for child in children):
                break
            time.sleep(0.5)

    def _stop_children(self, children: list[subprocess.Popen]) -> None:
        """Stop in dependency order: the django-q2 cluster first (no new workers get
        spawned), then the local workers (they snapshot through the web server), the web
        server last."""
        web, others = children[0], children[1:]
        _signal(others)  # the cluster stops spawning while the workers stop
        stopped = stop_local_workers()
        _wait(others)
        stopped += stop_local_workers()  # one the cluster spawned while stopping
        if stopped:
            self.stdout.write(f"Stopped {stopped} local worker process(es).")
        # runserver's autoreloader serves from a child: signal its whole group; gunicorn's
        # master stops its own workers. Whatever is left of the group is killed after.
        _signal([web], group=self._dev)
        _wait([web], timeout=20, group=True)


def _signal(children, group: bool = False) -> None:
    for child in children:
        if child.poll() is None:
            if group:  # each child leads its own session: its group is its own tree
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
            else:
                child.send_signal(signal.SIGTERM)


def _wait(children, timeout: float = 15, group: bool = False) -> None:
    """Wait (bounded) for children already sent SIGTERM, then SIGKILL what is left (with
    ``group``, of their whole process group: nothing of the web server may outlive us)."""
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=5)
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
