"""The outbox draining at Telegram's paced rate (issue 13, SPEC §22), for bench/broadcast.py.

A loopback fake of the Bot API records when each ``sendMessage`` arrives, per bot and per
chat, and answers like Telegram would: 429 with ``retry_after`` when a bot goes past 30
messages in any second or a chat gets two messages less than a second apart (both with a
small allowance for network jitter). The real sender (``drain_bot``, one thread per bot,
its own connection) drains the rows for a bounded time; the figures are computed from the
server's side of the wire.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.fakes.http import send_json  # bench/_common.py puts the repository on sys.path

BOT_LIMIT = 30  # messages per second per bot (Bot FAQ)
CHAT_GAP = 1.0  # seconds between two messages to one private chat
JITTER = 0.05  # arrival times wobble by a few ms on a busy machine


class FakeTelegram:
    """sendMessage on 127.0.0.1:<free port>; ``arrivals[bot] = [(t, chat)]``."""

    def __init__(self):
        self.arrivals: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self.refused: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                now = time.monotonic()
                token, _, method = self.path.lstrip("/").partition("/")
                bot = token.removeprefix("bot").split(":")[0]
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)))
                status, answer = fake.answer(bot, method, str(body.get("chat_id")), now)
                send_json(self, status, answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def answer(self, bot: str, method: str, chat: str, now: float) -> tuple[int, dict]:
        if method != "sendMessage":
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        with self._lock:
            sent = self.arrivals[bot]
            in_last_second = sum(1 for t, _ in sent[-BOT_LIMIT - 5 :] if t > now - 1 + JITTER)
            last_in_chat = next((t for t, c in reversed(sent[-200:]) if c == chat), None)
            too_fast = last_in_chat is not None and now - last_in_chat < CHAT_GAP - JITTER
            if in_last_second >= BOT_LIMIT or too_fast:
                self.refused[bot] += 1
                return 429, {
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": 1},
                }
            sent.append((now, chat))
            return 200, {"ok": True, "result": {"message_id": len(sent)}}

    def figures(self, bot: str) -> dict:
        sent = self.arrivals[bot]
        times = [t for t, _ in sent]
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        # The busiest second: most arrivals in any window [t, t + 1).
        busiest = max(
            (bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0
        )
        by_chat: dict[str, list[float]] = defaultdict(list)
        for t, chat in sent:
            by_chat[chat].append(t)
        gaps = [b - a for ts in by_chat.values() for a, b in zip(ts, ts[1:], strict=False)]
        return {
            "sent": len(sent),
            "rate": (len(sent) - 1) / span if span else 0.0,
            "busiest_second": busiest,
            "min_chat_gap": min(gaps) if gaps else None,
            "refused_429": self.refused[bot],
        }


def drain_for(agent_key: str, token: str, base_url: str, seconds: float, out: dict) -> None:
    """One bot's sender, as the after-commit task runs it, until its rows are gone or the
    time is up; runs in its own thread (its own database connection)."""
    from django.db import connection

    from telegram.bot_api import TelegramClient
    from telegram.outbox_models import OutboxBot, OutboxMessage
    from telegram.outbox_sender import drain_bot

    client = TelegramClient(token, base_url=base_url)
    totals: dict[str, int] = defaultdict(int)
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            for key, value in drain_bot(agent_key, client=client, max_seconds=left).items():
                totals[key] += value
            pending = OutboxMessage.objects.filter(
                agent_key=agent_key, status=OutboxMessage.PENDING
            )
            if not pending.exists():
                break
            # A 429 pause or a backoff: wait for it as the safety-net schedule would.
            paused = OutboxBot.objects.filter(agent_key=agent_key).values_list(
                "paused_until", flat=True
            )
            time.sleep(0.2 if paused else 0.05)
    finally:
        connection.close()
    out[agent_key] = dict(totals)
