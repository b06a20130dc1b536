"""Log filters. Telegram puts the bot token in the request path (``/bot<token>/method``), so
any log line that could carry such a path goes through ``RedactBotTokens``."""

from __future__ import annotations

import logging
import re
import sys

BOT_TOKEN = re.compile(r"bot\d{1,20}:[A-Za-z0-9_\-]{10,}")


class RedactBotTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if BOT_TOKEN.search(message):
            record.msg = BOT_TOKEN.sub("bot<redacted>", message)
            record.args = ()
        return True


class CurrentStderrHandler(logging.StreamHandler):
    """A console handler that writes to whatever ``sys.stderr`` is when it writes.

    A plain StreamHandler keeps the stream it was built with; a test runner (or anything
    that swaps ``sys.stderr`` for a while) would leave it writing to a closed capture.
    """

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass  # always the current sys.stderr


def redacted_stderr_handler() -> dict:
    """A ``LOGGING`` handler writing to the current stderr with bot tokens redacted."""
    return {
        "()": "config.logging_filters.CurrentStderrHandler",
        "formatter": "plain",
        "filters": ["redact_bot_tokens"],
    }


def base_logging(level: str) -> dict:
    """The ``LOGGING`` both the server and the worker start from (the worker's settings may
    not import the server's): plain lines on stderr, bot tokens redacted, urllib3 quiet —
    it logs request paths at DEBUG, and Telegram's paths contain the bot token."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "filters": {"redact_bot_tokens": {"()": "config.logging_filters.RedactBotTokens"}},
        "handlers": {"console": redacted_stderr_handler()},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"urllib3": {"level": "WARNING"}},
    }
