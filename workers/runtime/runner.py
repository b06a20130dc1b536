"""The reference worker loop (SPEC §12).

Loop: control → claim; when there is no job, wait ``poll_seconds`` (2 s) and poll again.
Per job: heartbeat thread (every ``heartbeat_seconds``, 10 s) → hydration → handler →
complete with the reply and the history (the server delivers it, SPEC §22). An agent in
compatibility mode (the hydration carries the bot token) keeps the old path: deliver →
``delivered`` → append history → complete. A 409 on the heartbeat aborts the job
(no reply is sent, nothing else is called for it: the lease belongs to someone else now). A
job whose message was already delivered (a retry after a crash between delivery and
completion) is completed without sending again.

On start: restore the conversation's latest snapshot into the data dir, then materialise
the global skills into ``<data dir>/skills``. On SIGTERM, ``should_stop`` or idle exit:
finish the current job, snapshot the data dir (tar.gz), return ``EXIT_OK``.

Exit codes (``agent-factory-worker``, ``manage.py run_worker``; see ``cli.py``): 0 normal
stop; 1 another API error (a 4xx other than 401); 2 bad configuration; 3 the server refused
the worker token (401: revoked, or never valid).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from workers.runtime.api_client import ApiError, LeaseLostError, WorkerApiClient
from workers.runtime.archive import (
    DEFAULT_LIMITS,
    ArchiveLimits,
    clear_data_dir,
)
from workers.runtime.handlers import (
    HandlerError,
    redact,
    resolve_handler,
    run_handler,
    secrets_of,
)
from workers.runtime.heartbeat import ClaimInterrupted, Heartbeat
from workers.runtime.reply_media import discard_scratch_files, upload_reply_media
from workers.runtime.telegram_sender import DEFAULT_API_BASE_URL, TelegramSender, TelegramSendError
from workers.runtime.workspace import restore_latest, take_snapshot

logger = logging.getLogger("agent_factory.worker")

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_CONFIG = 2
EXIT_UNAUTHORIZED = 3

# What handlers write (model output is Markdown); the server renders it for Telegram.
REPLY_FORMAT = "markdown"


@dataclass
class WorkerSettings:
    api_url: str
    token: str
    worker_id: str
    data_dir: Path
    conversation_id: str | None = None
    agent_key: str | None = None
    workspace_id: str = "default"
    # The handler for every job when the worker is started with one; None: the agent's
    # ``runtime.handler`` from each job's hydration (SPEC §21).
    handler: str | None = None
    skills_channel: str = "stable"
    # Where replies go while the worker delivers them itself (SPEC §22 compatibility mode).
    telegram_api_base_url: str = DEFAULT_API_BASE_URL
    idle_exit_seconds: float | None = None
    poll_seconds: float = 2.0
    # Long-poll claims (SPEC §7): the server holds an idle claim this long (0: plain polls).
    claim_wait_seconds: float = 0.0
    heartbeat_seconds: float = 10.0
    # Past the server's stale_after (420 s by default) it has written this worker off and
    # may have handed its conversation on; a machine left polling a vanished server would
    # only run up the bill. 0 waits forever.
    max_outage_seconds: float = 900.0
    # SPEC §23: what a restored archive (and a skills manifest) may hold.
    archive_limits: ArchiveLimits = DEFAULT_LIMITS


class WorkerRuntime:
    def __init__(
        self,
        settings: WorkerSettings,
        client: WorkerApiClient,
        handler,
        *,
        telegram_factory=None,
    ):
        self.settings = settings
        self.client = client
        self.handler = handler
        # Every handler that ran here (the agent's own when the worker names none): each may
        # hold a process on the data dir that must let go before a snapshot.
        self.handlers_used = {handler} - {None}
        self.telegram_factory = telegram_factory or (
            lambda token: TelegramSender(token, base_url=settings.telegram_api_base_url)
        )
        self.stop_requested = threading.Event()
        self.conversation_id = settings.conversation_id
        self.agent_key = settings.agent_key
        self.restored_for: str | None = None
        self.jobs_done = 0
        # The conversation claims are restricted to: the configured one, then whichever the
        # server assigns (fair share may move an idle worker to a waiting conversation).
        self.claim_for = settings.conversation_id
        self._waiting_claim = False

    # Lifecycle -------------------------------------------------------------------------
    def request_stop(self, *_args) -> None:
        self.stop_requested.set()
        if self._waiting_claim and threading.current_thread() is threading.main_thread():
            # A signal during a long-poll claim: leave the request now rather than after up
            # to ``claim_wait_seconds`` (the grace before SIGKILL must go to the snapshot).
            raise ClaimInterrupted()

    def run(self) -> int:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Restore first, then skills: the skills dir is never part of a snapshot, and the
        # manifest (not an old archive) decides which skills this worker has.
        if self.conversation_id and self.agent_key:
            self.restore_snapshot(self.conversation_id, self.agent_key)
        self.materialise_skills()
        idle_since = time.monotonic()
        reason = "signal"
        failures = 0
        outage_since: float | None = None
        while not self.stop_requested.is_set():
            try:
                control = self.client.control()
                if control.get("should_stop"):
                    logger.info("Server says stop: %s", control.get("reason"))
                    reason = "drain"
                    break
                self.follow_assignment(control.get("conversation_id"))
                job = self.claim()
                failures, outage_since = 0, None
            except ClaimInterrupted:
                break
            except ApiError as exc:
                if not _transient(exc):
                    raise  # 401 (token refused) and other 4xx: the command maps them
                # The server is restarting or unreachable: keep the workspace, back off.
                failures += 1
                outage_since = outage_since or time.monotonic()
                outage = time.monotonic() - outage_since
                limit = self.settings.max_outage_seconds
                if limit and outage >= limit:
                    logger.error("Worker API unavailable for %.0f s: giving up.", outage)
                    detail = f"no answer from the worker API for {outage:.0f} s"
                    raise ApiError(exc.status, "unavailable", detail) from exc
                logger.warning("Worker API unavailable (%s); retrying.", exc.code)
                job = None
            if job is None:
                idle = time.monotonic() - idle_since
                if self.settings.idle_exit_seconds and idle >= self.settings.idle_exit_seconds:
                    logger.info("Idle for %.0f s: exiting.", idle)
                    reason = "drain"
                    break
                self.stop_requested.wait(self.settings.poll_seconds * min(2**failures, 8))
                continue
            self.process(job)
            idle_since = time.monotonic()
        self.snapshot(reason)
        return EXIT_OK

    def claim(self) -> dict | None:
        wait = self.settings.claim_wait_seconds
        if not wait or self.stop_requested.is_set():
            return self.client.claim(self.claim_for)
        self._waiting_claim = True
        try:
            return self.client.claim(self.claim_for, wait_seconds=wait)
        finally:
            self._waiting_claim = False

    # One job ---------------------------------------------------------------------------
    def process(self, job: dict) -> str:
        """Run one job; returns what happened (done, aborted, failed, redelivered)."""
        if self.restored_for != job["conversation_id"]:
            self.switch_conversation(job["conversation_id"], job["agent_key"])
        self.conversation_id = job["conversation_id"]
        self.agent_key = job["agent_key"]
        heartbeat = Heartbeat(self.client, job, self.settings.heartbeat_seconds)
        heartbeat.start()
        secrets: tuple[str, ...] = ()
        try:
            bundle = self.client.hydration(job)
            if job.get("delivered_at"):
                # Delivered before a crash: never send twice, just finish the job.
                heartbeat.stop()
                self.client.complete(job)
                return "redelivered"
            secrets = secrets_of(bundle)
            handler = resolve_handler(self.handler, bundle)
            self.handlers_used.add(handler)
            result = run_handler(handler, job, bundle, self.settings.data_dir, self.client)
            reply, usage = result.text, result.usage
            if heartbeat.lost.is_set():
                return "aborted"
            if not bundle.get("telegram_bot_token"):
                # Server delivery (SPEC §22): the files first, then the reply, its history
                # and the usage in one complete; the server writes the outbox in the same
                # transaction.
                body = {"text": reply, "format": REPLY_FORMAT}
                if result.media:
                    body["media"] = upload_reply_media(self.client, job, result.media)
                heartbeat.stop()  # no heartbeat may land after the lease is released
                self.client.complete(
                    job, usage, reply=body, history=self.history_entries(job, reply)
                )
                discard_scratch_files(result.media, self.settings.data_dir)
                self.jobs_done += 1
                return "done"
            if result.media:  # compatibility mode sends text only (SPEC §22)
                logger.warning("Job %s: reply files dropped (delivery: worker).", job["message_id"])
            self.deliver(job, bundle, reply)
            if heartbeat.lost.is_set():
                return "aborted"
            # Recorded before anything else: from here on a crash, a retry or a lost lease
            # never sends this reply again (the next claim sees delivered_at).
            self.client.delivered(job)
            self.client.append_messages(job, self.history_entries(job, reply))
            heartbeat.stop()  # no heartbeat may land after the lease is released
            self.client.complete(job, usage)
            self.jobs_done += 1
            return "done"
        except LeaseLostError:
            logger.warning("Lease lost for message %s.", job["message_id"])
            return "aborted"
        except Exception as exc:  # the handler or delivery failed: report it, keep running
            # The text goes to the log and the admin: the model key is taken out of it (a
            # handler should never put it there; this is the last line of defence).
            error = redact(
                str(exc) if isinstance(exc, HandlerError) else f"{type(exc).__name__}: {exc}",
                secrets,
            )
            # A traceback only where no secret could be in it (the message is redacted).
            unexpected = not isinstance(exc, HandlerError) and not secrets
            logger.error("Job %s failed: %s", job["message_id"], error, exc_info=unexpected)
            heartbeat.stop()
            if heartbeat.lost.is_set():
                return "aborted"
            try:
                self.client.fail(job, error, getattr(exc, "usage", None))
            except ApiError as fail_exc:
                logger.warning("Could not report the failure: %s", fail_exc)
            return "failed"
        finally:
            heartbeat.stop()

    def history_entries(self, job: dict, reply: str) -> list[dict]:
        text = (job.get("payload") or {}).get("message_text") or ""
        return [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]

    def deliver(self, job: dict, bundle: dict, reply: str) -> None:
        payload = job.get("payload") or {}
        chat_id = (payload.get("metadata") or {}).get("telegram_chat_id")
        token = bundle.get("telegram_bot_token")
        if payload.get("provider") != "telegram":
            return  # not a Telegram conversation: the reply lives in the history only
        if not chat_id or not token:
            # Never record a reply as delivered that no one received: fail, so it is retried
            # (and dead-lettered, visible in the admin) instead of vanishing.
            missing = "chat id in the payload" if not chat_id else "bot token in the hydration"
            raise RuntimeError(f"Cannot deliver to Telegram: no {missing}.")
        try:
            self.telegram_factory(token).send_message(chat_id, reply)
        except TelegramSendError as exc:
            raise RuntimeError(f"Telegram delivery failed: {exc}") from None

    # Snapshots and skills ---------------------------------------------------------------
    def switch_conversation(self, conversation_id: str, agent_key: str) -> None:
        """Give the data dir to another conversation: save the previous one's workspace,
        empty the data dir (one conversation's files must never reach another's agent),
        then restore the new conversation's latest snapshot."""
        if self.restored_for is not None or self.jobs_done:
            self.snapshot("drain")
            self.jobs_done = 0
            clear_data_dir(self.settings.data_dir)
        self.restore_snapshot(conversation_id, agent_key)

    def follow_assignment(self, assigned: str | None) -> None:
        """The server gave this worker another conversation (fair share, SPEC §6.2): claim
        there from now on, and hand the old one off at once — snapshot it and empty the
        data dir — since no other worker may claim there until that snapshot is stored."""
        if not assigned:  # unassigned: back to what it was configured with
            self.claim_for = self.settings.conversation_id
            return
        if assigned == self.claim_for:
            return
        logger.info("Assigned to conversation %s now.", assigned)
        self.claim_for = assigned
        if self.restored_for not in (None, assigned) and self.jobs_done:
            self.snapshot("drain")
            self.jobs_done = 0
            clear_data_dir(self.settings.data_dir)
            self.restored_for = None  # the next job restores its conversation's snapshot

    def restore_snapshot(self, conversation_id: str, agent_key: str) -> bool:
        """Restore the newest usable snapshot of the conversation into the data dir (never
        raises: with nothing usable the worker starts with an empty workspace)."""
        self.restored_for = conversation_id
        return restore_latest(self.client, self.settings, conversation_id, agent_key)

    def snapshot(self, reason: str) -> int | None:
        # A handler that keeps a process on the data dir (OpenClaw's warm gateway) lets go
        # of it first, so the archive holds closed files.
        for handler in self.handlers_used:
            before_snapshot = getattr(handler, "before_snapshot", None)
            if before_snapshot is not None:
                before_snapshot()
        if not self.conversation_id or not self.agent_key or not self.jobs_done:
            return None
        return take_snapshot(
            self.client, self.settings, self.conversation_id, self.agent_key, reason
        )

    def materialise_skills(self) -> dict | None:
        from workers.runtime.skills import materialise_skills

        try:
            result = materialise_skills(
                self.client,
                self.settings.data_dir / "skills",
                channel=self.settings.skills_channel,
                workspace_id=self.settings.workspace_id,
                limits=self.settings.archive_limits,
            )
        except Exception as exc:  # a broken manifest must not keep the worker from serving
            if isinstance(exc, ApiError) and exc.status == 401:
                raise  # the token is refused: exit 3, not "serve without skills"
            logger.warning("Skills not materialised: %s", exc)
            return None
        logger.info(
            "Skills: %d installed, %d rejected, %d removed.",
            len(result["installed"]),
            len(result["rejected"]),
            len(result["removed"]),
        )
        return result


def _transient(exc: ApiError) -> bool:
    """Network errors and 5xx are worth waiting out; 4xx answers are not."""
    return exc.status == 0 or exc.status >= 500
