"""The main job on one machine: migrate, demo admin, web server, django-q2 cluster.

The local worker pool is not a child of this command: the reconcile schedule (run by the
django-q2 cluster) spawns ``run_worker`` processes through the local provider on demand.
"""

from __future__ import annotations

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

DEMO_USERNAME = "admin"


def stop_local_workers(grace_seconds: float | None = None) -> int:
    """Stop the local worker processes this machine still runs, all at once: they finish or
    release their job and snapshot through the web server, which must still be serving (the
    caller stops it afterwards); stragglers are killed so none outlives the server it talks
    to. Returns how many were signalled."""
    from workers.models import Worker
    from workers.providers.local import terminate_worker_processes

    workers = Worker.objects.filter(provider="local").exclude(status="stopped")
    return len(terminate_worker_processes(list(workers), grace_seconds))


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for a SIGTERM when the parent dies, so a main job
    killed with SIGKILL leaves no server behind (elsewhere this is a no-op)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_child(argv: list[str]) -> subprocess.Popen:
    """Start a child in its own session: Ctrl+C (SIGINT to the terminal's process group) and
    a SIGTERM to our group reach only the supervisor, which then stops everything in order;
    the web server must outlive the workers, which snapshot through it."""
    # preexec_fn is unsafe with threads; this command starts its children before any.
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent)


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
            "--no-qcluster",
            action="store_true",
            help="Do not start the django-q2 cluster (schedules, triggers).",
        )

    def handle(self, *args, host, port, no_qcluster, **options):
        if not settings.DEBUG:
            self.stderr.write(
                "run_embedded serves the development server; for production run gunicorn "
                "and 'manage.py qcluster' under your process manager (see README)."
            )
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database migrated.")
        self._run_setup_hooks()
        username, password, _ = ensure_demo_admin(settings.VAR_DIR / "demo-admin-password")

        python = sys.executable
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        children: list[subprocess.Popen] = [
            start_child([python, manage, "runserver", f"{host}:{port}", "--noreload"])
        ]
        if not no_qcluster:
            children.append(start_child([python, manage, "qcluster"]))

        base = f"http://{host}:{port}"
        if self._wait_until_serving(base, children):
            self._run_poststart_hooks()
        self.stdout.write(
            self.style.SUCCESS(
                f"\nAgent Factory is running at {base}/admin/\n"
                f"  demo admin: {username} / {password}\n"
            )
        )
        if settings.AGENT_FACTORY_TELEGRAM_SANDBOX:
            self.stdout.write(
                "  Telegram sandbox: in another terminal, try\n"
                f"    {simulate_update_hint()}\n"
                "  and watch the reply under Telegram > Sandbox messages in the admin.\n"
            )
        self.stdout.write("Press Ctrl+C to stop.\n")
        self._supervise(children)

    def _run_setup_hooks(self) -> None:
        """Idempotent start-up steps other apps register (schedules, the Telegram sandbox)."""
        for name in getattr(settings, "AGENT_FACTORY_STARTUP_COMMANDS", []):
            call_command(name, verbosity=0)

    def _wait_until_serving(self, base: str, children, timeout: float = 60) -> bool:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
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
        """Wait for Ctrl+C/SIGTERM or a child's death, then stop in dependency order:
        the django-q2 cluster first (no new workers get spawned), then the local workers
        (they snapshot through the web server), the web server last."""
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            while not stopping:
                if any(child.poll() is not None for child in children):
                    break
                time.sleep(0.5)
        finally:
            web, others = children[0], children[1:]
            _signal(others)  # the cluster stops spawning while the workers stop
            stopped = stop_local_workers()
            _wait(others)
            stopped += stop_local_workers()  # one the cluster spawned while stopping
            if stopped:
                self.stdout.write(f"Stopped {stopped} local worker process(es).")
            _signal([web])
            _wait([web])
        failed = [c for c in children if c.returncode not in (0, -signal.SIGTERM, None)]
        if failed and not stopping:
            raise CommandError("A child process exited unexpectedly; everything was stopped.")


def _signal(children) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)


def _wait(children, timeout: float = 15) -> None:
    """Wait (bounded) for children already sent SIGTERM, then SIGKILL what is left."""
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=5)
