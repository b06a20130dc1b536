"""Local provider: worker processes on this machine running ``manage.py run_worker``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

from workers.models import Worker
from workers.providers.base import Provider, ProviderError, SpawnRequest, SpawnResult

TERM_GRACE_SECONDS = 10.0


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


def _reap(pid: int) -> None:
    # Collect the exit status if the process is our child, so it does not linger as a zombie.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class LocalProvider(Provider):
    name = "local"

    def spawn(self, request: SpawnRequest) -> SpawnResult:
        data_dir = Path(settings.VAR_DIR) / "worker-data" / request.worker_id
        log_dir = Path(settings.VAR_DIR) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **request.env,
            "AGENT_FACTORY_API_URL": request.api_url,
            "AGENT_FACTORY_WORKER_TOKEN": request.token,
            "AGENT_FACTORY_WORKER_ID": request.worker_id,
            "AGENT_FACTORY_DATA_DIR": str(data_dir),
        }
        if request.conversation_id:
            env["AGENT_FACTORY_CONVERSATION_ID"] = request.conversation_id
        if request.agent_key:
            env["AGENT_FACTORY_AGENT_KEY"] = request.agent_key
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
        if not process_alive(pid, worker.worker_id):
            return
        if force:
            _signal_group(pid, signal.SIGKILL)
        else:
            terminate_worker_processes([worker])
        for _ in range(50):
            if not process_alive(pid, worker.worker_id):
                return
            time.sleep(0.1)
        raise ProviderError(f"Local worker process {pid} did not exit after SIGKILL.")


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
