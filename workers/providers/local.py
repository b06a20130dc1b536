"""Local provider: worker processes on this machine running ``manage.py run_worker``.

A worker runs agent code, so it gets nothing of the server (SPEC §23): an environment of
exactly the names in ``WORKER_ENV_ALLOWLIST`` and a data dir outside ``var/``, away from the
SQLite database and the development key file.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

from workers.models import Worker
from workers.providers.base import Provider, ProviderError, SpawnRequest, SpawnResult
from workers.runtime.data_dir import data_dir_under, default_data_root

TERM_GRACE_SECONDS = 10.0

# Taken from the server's own environment when set there (the process basics, and the
# worker knobs an operator may set for every local worker).
INHERITED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "AGENT_FACTORY_WORKER_HANDLER",
    "AGENT_FACTORY_MAX_OUTAGE_SECONDS",
    "AGENT_FACTORY_CLAIM_WAIT_SECONDS",
)
# Everything a local worker's environment may hold (SPEC §23), and nothing else: never the
# server's SECRET_KEY, AGENT_FACTORY_ENCRYPTION_KEYS, DATABASE_URL, FLY_API_TOKEN, ….
# TELEGRAM_API_BASE_URL stays until the server delivers replies itself (SPEC §22).
WORKER_ENV_ALLOWLIST = frozenset(
    {
        *INHERITED_ENV,
        "AGENT_FACTORY_API_URL",
        "AGENT_FACTORY_WORKER_TOKEN",
        "AGENT_FACTORY_WORKER_ID",
        "AGENT_FACTORY_CONVERSATION_ID",
        "AGENT_FACTORY_AGENT_KEY",
        "AGENT_FACTORY_DATA_DIR",
        "TELEGRAM_API_BASE_URL",
    }
)


def local_data_root() -> Path:
    """Where local workers' data dirs live: ``AGENT_FACTORY_LOCAL_DATA_ROOT`` or
    ``<system temp dir>/agent-factory-workers``."""
    configured = getattr(settings, "AGENT_FACTORY_LOCAL_DATA_ROOT", "")
    return Path(configured) if configured else default_data_root()


def local_data_dir(worker_id: str) -> Path:
    try:
        return data_dir_under(local_data_root(), worker_id)
    except ValueError as exc:
        raise ProviderError(str(exc))


def _check_outside_server_files(data_dir: Path) -> None:
    """Refuse a data dir inside the directory of the database, var/ or the
    key file: the worker could list or read them from its own data dir's parents."""
    protected = [Path(settings.VAR_DIR), Path(settings.AGENT_FACTORY_DEV_KEY_FILE).parent]
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3") and str(database.get("NAME", ":memory:")) not in (
        "",
        ":memory:",
    ):
        protected.append(Path(database["NAME"]).parent)
    resolved = data_dir.resolve()
    for directory in protected:
        directory = directory.resolve()
        if resolved == directory or directory in resolved.parents:
            raise ProviderError(
                f"The local worker data dir {data_dir} is inside {directory}, next to the "
                "server's database or key file; set AGENT_FACTORY_LOCAL_DATA_ROOT elsewhere."
            )


def _ensure_private_root(root: Path) -> None:
    """Create the data root private to this user. The temp dir is shared with other local
    accounts: a root someone else created (or a symlink planted there) is refused."""
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(root)
    except OSError as exc:
        raise ProviderError(f"Could not create the local worker data root {root}: {exc}")
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
        raise ProviderError(
            f"The local worker data root {root} is a symlink or belongs to another user; "
            "set AGENT_FACTORY_LOCAL_DATA_ROOT to a directory of this user."
        )


def worker_environment(request: SpawnRequest, data_dir: Path) -> dict[str, str]:
    """The complete environment of a local worker process (see WORKER_ENV_ALLOWLIST)."""
    env = {name: os.environ[name] for name in INHERITED_ENV if os.environ.get(name)}
    env.update(request.env)
    env.update(
        {
            "AGENT_FACTORY_API_URL": request.api_url,
            "AGENT_FACTORY_WORKER_TOKEN": request.token,
            "AGENT_FACTORY_WORKER_ID": request.worker_id,
            "AGENT_FACTORY_DATA_DIR": str(data_dir),
            "TELEGRAM_API_BASE_URL": settings.TELEGRAM_API_BASE_URL,
        }
    )
    if request.conversation_id:
        env["AGENT_FACTORY_CONVERSATION_ID"] = request.conversation_id
    if request.agent_key:
        env["AGENT_FACTORY_AGENT_KEY"] = request.agent_key
    return {name: value for name, value in env.items() if name in WORKER_ENV_ALLOWLIST}


def _process_state(pid: int) -> str | None:
    """The /proc state letter of ``pid`` (None when it does not exist)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _is_our_worker(pid: int, worker_id: str) -> bool:
    """Guards against pid reuse: the process must carry this worker's id in its environment."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return f"AGENT_FACTORY_WORKER_ID={worker_id}".encode() in environ.split(b"\0")


def process_alive(pid: int | None, worker_id: str) -> bool:
    if not pid:
        return False
    _reap(pid)
    state = _process_state(pid)
    return state is not None and state not in ("Z", "X") and _is_our_worker(pid, worker_id)


def process_exited(pid: int | None) -> bool:
    """True once ``pid`` has exited (a zombie counts), without reaping it: its parent may
    still want the exit status."""
    return not pid or _process_state(pid) in (None, "Z", "X")


def _reap(pid: int) -> None:
    # Collect the exit status if the process is our child, so it does not linger as a zombie.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class LocalProvider(Provider):
    name = "local"

    def spawn(self, request: SpawnRequest) -> SpawnResult:
        data_dir = local_data_dir(request.worker_id)
        _check_outside_server_files(data_dir)
        _ensure_private_root(data_dir.parent)
        log_dir = Path(settings.VAR_DIR) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = worker_environment(request, data_dir)
        command = settings.AGENT_FACTORY_LOCAL_WORKER_COMMAND or [
            sys.executable,
            str(Path(settings.BASE_DIR) / "manage.py"),
            "run_worker",
        ]
        log = open(log_dir / f"worker-{request.worker_id}.log", "ab")  # noqa: SIM115
        try:
            process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: signals reach all its children
                cwd=str(settings.BASE_DIR),
            )
        except OSError as exc:
            raise ProviderError(f"Could not start a local worker process: {exc}")
        finally:
            log.close()
        return SpawnResult(machine_id=f"pid-{process.pid}", process_id=process.pid)

    def is_gone(self, worker: Worker) -> bool:
        return not process_alive(worker.process_id, worker.worker_id)

    def teardown(self, worker: Worker, *, force: bool = False) -> None:
        pid = worker.process_id
        if process_alive(pid, worker.worker_id):
            if force:
                _signal_group(pid, signal.SIGKILL)
            else:
                terminate_worker_processes([worker])
            for _ in range(50):
                if not process_alive(pid, worker.worker_id):
                    break
                time.sleep(0.1)
            else:
                raise ProviderError(f"Local worker process {pid} did not exit after SIGKILL.")
        remove_data_dir(worker.worker_id)


def remove_data_dir(worker_id: str) -> None:
    """Once the process is gone (its snapshot, if any, is on the server), its files go too."""
    try:
        shutil.rmtree(local_data_dir(worker_id), ignore_errors=True)
    except ProviderError:
        pass  # an id that never had a data dir of ours


def terminate_worker_processes(workers, grace_seconds: float | None = None) -> list[Worker]:
    """SIGTERM the live processes of ``workers`` together, give them ``grace_seconds`` (the
    configured grace by default) to finish their job and snapshot, then SIGKILL whichever
    still run. Returns the workers that were signalled."""
    if grace_seconds is None:
        grace_seconds = settings.AGENT_FACTORY_LOCAL_TERM_GRACE_SECONDS
    signalled = [w for w in workers if process_alive(w.process_id, w.worker_id)]
    for worker in signalled:
        _signal_group(worker.process_id, signal.SIGTERM)
    running = list(signalled)
    deadline = time.monotonic() + grace_seconds
    while running and time.monotonic() < deadline:
        time.sleep(0.1)
        running = [w for w in running if process_alive(w.process_id, w.worker_id)]
    for worker in running:
        _signal_group(worker.process_id, signal.SIGKILL)
    return signalled


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise ProviderError(f"Not allowed to signal worker process {pid}: {exc}")
