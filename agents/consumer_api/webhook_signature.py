"""Signing event webhooks (SPEC §15): ``X-Agent-Factory-Signature: t=<unix>,v1=<hex>``, the
hex HMAC-SHA256 of ``"<t>.<body>"`` under the key's webhook secret. A receiver accepts a
timestamp within 5 minutes of its clock (the replay window). README carries a standalone
copy of ``verify`` for host apps; tests/consumer_api/test_event_signature.py runs both."""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Agent-Factory-Signature"
REPLAY_WINDOW_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def header_value(secret: str, body: bytes, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(
    secret: str,
    body: bytes,
    header: str,
    *,
    now: float | None = None,
    tolerance: int = REPLAY_WINDOW_SECONDS,
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its time is within the window."""
    parts = dict(item.split("=", 1) for item in (header or "").split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return hmac.compare_digest(expected, parts.get("v1", ""))
