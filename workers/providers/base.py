"""The small interface every provider implements: spawn, observe, teardown."""

from __future__ import annotations

from dataclasses import dataclass, field

from workers.models import Worker


class ProviderError(Exception):
    """A provider call failed. The message is safe to store and show (no tokens)."""


class SpawnFailed(ProviderError):
    """A spawn failed and could not clean up everything it had created.

    ``leftover`` names what may still exist (and still bill): the caller records it on the
    worker row so the next teardown pass retries its removal instead of forgetting it.
    """

    def __init__(self, message: str, leftover: SpawnResult):
        super().__init__(message)
        self.leftover = leftover


@dataclass(frozen=True)
class SpawnRequest:
    worker_id: str
    token: str
    api_url: str
    conversation_id: str | None
    agent_key: str | None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SpawnResult:
    machine_id: str = ""
    machine_app: str = ""
    region: str = ""
    volume_id: str = ""
    process_id: int | None = None


class Provider:
    name = "base"
    #: Whether reconcile spawns workers at all (the "none" provider does not).
    autoscale = True

    def preflight(self) -> None:
        """Raise ProviderError when spawning cannot work (configuration, credentials), so
        reconcile says so once instead of failing a fresh worker on every pass. Must not
        call out: it runs inside reconcile's transaction."""
        return None

    def spawn(self, request: SpawnRequest) -> SpawnResult:
        raise NotImplementedError

    def is_gone(self, worker: Worker) -> bool:
        """True when the worker's process or machine no longer exists."""
        raise NotImplementedError

    def teardown(self, worker: Worker, *, force: bool = False) -> None:
        """Stop and remove what the worker runs on; 'already gone' is success."""
        raise NotImplementedError


class NoProvider(Provider):
    """Workers are started by hand (issue_worker_token + run_worker); nothing to manage."""

    name = "none"
    autoscale = False

    def spawn(self, request: SpawnRequest) -> SpawnResult:
        raise ProviderError("The 'none' provider does not spawn workers.")

    def is_gone(self, worker: Worker) -> bool:
        return False

    def teardown(self, worker: Worker, *, force: bool = False) -> None:
        return None
