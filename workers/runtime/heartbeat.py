"""The reference worker's lease heartbeat thread, and the signal that ends a waiting claim
(SPEC §12; used by ``workers.runtime.runner``)."""

from __future__ import annotations

import logging
import threading

from workers.runtime.api_client import ApiError, LeaseLostError, WorkerApiClient

logger = logging.getLogger("agent_factory.worker")


class ClaimInterrupted(Exception):
    """A stop signal arrived while a long-poll claim was waiting."""


class Heartbeat(threading.Thread):
    """Extends the lease every ``interval`` seconds; a 409 marks the job as aborted."""

    def __init__(self, client: WorkerApiClient, job: dict, interval: float):
        super().__init__(daemon=True, name=f"heartbeat-{job['message_id']}")
        self.client = client
        self.job = job
        self.interval = interval
        self.lost = threading.Event()
        # Not ``_stop``: that name is threading.Thread's own method (join() calls it).
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.client.heartbeat(self.job)
            except LeaseLostError:
                logger.warning("Lease lost for message %s: aborting it.", self.job["message_id"])
                self.lost.set()
                return
            except ApiError as exc:
                logger.warning("Heartbeat failed (will retry): %s", exc)

    def stop(self) -> None:
        """Stop and wait for an in-flight heartbeat, so none lands after complete/fail."""
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=35)  # bounded by the API client's own timeouts
