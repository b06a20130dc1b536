""" "typing…" in the chat while a job runs (SPEC §22): ``sendChatAction`` at claim and every
``INTERVAL`` seconds (Telegram shows it for about 5 s) until the job is no longer processing.

A server-side timer: one daemon thread per server process ticks for the jobs claimed
through that process. It holds no database connection between ticks and ends once it has
no job left; a lost indicator (the process restarted) only means no "typing…", never a lost
reply, so nothing here is persisted.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection

from agents.secret_store import SecretUnavailable
from telegram.bot_api import TelegramError
from telegram.bots import agent_client
from telegram.outbox import telegram_chat
from workers.models import Message

logger = logging.getLogger(__name__)

INTERVAL = 4.5


class TypingTicker:
    def __init__(self, interval: float = INTERVAL, client_for=agent_client):
        self.interval = interval
        self.client_for = client_for
        self.jobs: dict[int, tuple[str, str]] = {}  # message id → (agent key, chat id)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, message_id: int, agent_key: str, chat_id: str, *, start: bool = True) -> None:
        with self._lock:
            self.jobs[message_id] = (agent_key, chat_id)
            self._wake.set()
            if start and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="typing", daemon=True)
                self._thread.start()

    def tick(self) -> int:
        """Show "typing…" for every job still processing; forget the others. Returns how
        many chats were told."""
        with self._lock:
            jobs = dict(self.jobs)
        if not jobs:
            return 0
        running = set(
            Message.objects.filter(pk__in=list(jobs), status=Message.PROCESSING).values_list(
                "pk", flat=True
            )
        )
        with self._lock:
            for message_id in set(jobs) - running:
                self.jobs.pop(message_id, None)
        clients: dict[str, object] = {}
        told = 0
        for message_id in sorted(running):
            agent_key, chat_id = jobs[message_id]
            try:
                if agent_key not in clients:
                    clients[agent_key] = self.client_for(agent_key)
                client = clients[agent_key]
                if client is not None:
                    client.call_once("sendChatAction", {"chat_id": chat_id, "action": "typing"})
                    told += 1
            except (TelegramError, SecretUnavailable) as exc:  # cosmetic: never fails a job
                logger.info("typing indicator for chat %s not shown: %s", chat_id, exc)
        return told

    def _run(self) -> None:
        try:
            while True:
                self._wake.clear()
                try:
                    self.tick()
                finally:
                    connection.close()  # no connection held between ticks
                with self._lock:
                    if not self.jobs:
                        return
                self._wake.wait(self.interval)
        except Exception:
            logger.exception("typing indicator thread stopped")
        finally:
            close_old_connections()


TICKER = TypingTicker()


def job_claimed(message) -> None:
    """A worker took a Telegram job: show "typing…" in its chat until it is done."""
    if not getattr(settings, "AGENT_FACTORY_TYPING_INDICATOR", True):
        return
    chat_id = telegram_chat(message)
    if chat_id is not None:
        TICKER.add(message.pk, message.agent_key, chat_id)
