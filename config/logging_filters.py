"""Log filters and formats. Telegram puts the bot token in the request path
(``/bot<token>/method``), so any log line that could carry such a path goes through
``RedactBotTokens``. ``LOG_FORMAT=json`` writes one JSON object per line (SPEC §24)."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

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


# The ids a line may carry (agents.log_context.KEYS; repeated here so this module, which the
# worker's settings import, needs no app).
CONTEXT_KEYS = ("request_id", "agent_key", "conversation_id", "message_id", "worker_id")
LOG_FORMATS = ("plain", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the context
    ids known for the record, and the traceback (bot tokens redacted) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = str(value)
        if record.exc_info:
            line["exception"] = BOT_TOKEN.sub(
                "bot<redacted>", self.formatException(record.exc_info)
            )
        return json.dumps(line, ensure_ascii=False, default=str)


def redacted_stderr_handler(log_format: str = "plain") -> dict:
    """A ``LOGGING`` handler writing to the current stderr with bot tokens redacted."""
    filters = ["redact_bot_tokens"] + (["log_context"] if log_format == "json" else [])
    return {
        "()": "config.logging_filters.CurrentStderrHandler",
        "formatter": log_format,
        "filters": filters,
    }


def base_logging(level: str, log_format: str = "plain") -> dict:
    """The ``LOGGING`` both the server and the worker start from (the worker's settings may
    not import the server's): lines on stderr — plain, or JSON with the context ids
    (``log_format="json"``) — bot tokens redacted, urllib3 quiet: it logs request paths at
    DEBUG, and Telegram's paths contain the bot token."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be plain or json (got {log_format!r}).")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
            "json": {"()": "config.logging_filters.JsonFormatter"},
        },
        "filters": {
            "redact_bot_tokens": {"()": "config.logging_filters.RedactBotTokens"},
            "log_context": {"()": "agents.log_context.LogContextFilter"},
        },
        "handlers": {"console": redacted_stderr_handler(log_format)},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"urllib3": {"level": "WARNING"}},
    }
