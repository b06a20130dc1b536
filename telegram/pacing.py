"""Telegram's sending limits as a pacer (SPEC §22, Bot FAQ): per bot at most 30 messages a
second; per chat at most one a second, and 20 a minute in groups. Plain Python on an
injected clock, so tests measure the pacing without waiting."""

from __future__ import annotations

import time

BOT_INTERVAL = 1 / 30
CHAT_INTERVAL = 1.0
GROUP_INTERVAL = 60 / 20


class Pacer:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._bot_next = 0.0
        self._chat_next: dict[str, float] = {}

    @staticmethod
    def chat_interval(chat_id: str) -> float:
        return GROUP_INTERVAL if str(chat_id).startswith("-") else CHAT_INTERVAL

    def chat_wait(self, chat_id: str) -> float:
        """Seconds before this chat may get its next message."""
        return max(0.0, self._chat_next.get(chat_id, 0.0) - self.clock())

    def bot_wait(self) -> float:
        return max(0.0, self._bot_next - self.clock())

    def seed_chat(self, chat_id: str, seconds_since_last: float) -> None:
        """A message went to the chat before this pacer existed (an earlier sender)."""
        next_at = self.clock() + self.chat_interval(chat_id) - seconds_since_last
        self._chat_next[chat_id] = max(self._chat_next.get(chat_id, 0.0), next_at)

    def record(self, chat_id: str) -> None:
        now = self.clock()
        self._bot_next = now + BOT_INTERVAL
        self._chat_next[chat_id] = now + self.chat_interval(chat_id)
