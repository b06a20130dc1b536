"""The ids a log line carries (SPEC §24): request, agent, conversation, message, worker.

Kept in one context variable so every log record made while a request (or a task) runs can
name what it was about, without passing ids down every call. Standard library only: every
app may import it, and so may the logging configuration of the worker's settings.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

# The keys a log line may carry, in the order the JSON formatter writes them.
KEYS = ("request_id", "agent_key", "conversation_id", "message_id", "worker_id")

_context: contextvars.ContextVar[dict] = contextvars.ContextVar("agent_factory_log_context")


def current() -> dict:
    """The ids bound now (an empty dict outside any scope)."""
    return _context.get({})


def bind(**ids) -> None:
    """Add ids to the current scope (None values are ignored; unknown keys refused)."""
    unknown = set(ids) - set(KEYS)
    if unknown:
        raise ValueError(f"Unknown log context keys: {sorted(unknown)}")
    known = {k: str(v) for k, v in ids.items() if v is not None and v != ""}
    if known:
        _context.set({**current(), **known})


@contextmanager
def scope(**ids) -> Iterator[None]:
    """A fresh context for one request or task: nothing of the previous one on this thread
    (a threaded server reuses threads) survives into it, and nothing of it survives after."""
    token = _context.set({})
    try:
        bind(**ids)
        yield
    finally:
        _context.reset(token)


class LogContextFilter(logging.Filter):
    """Copies the bound ids onto each record (an id passed in ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True
