"""Worker bearer tokens: random, shown once, stored as a keyed hash (SPEC §7).

A token looks like ``wk_<prefix>_<secret>``. The prefix finds the worker row with an index;
the HMAC-SHA256 of the whole token under ``SECRET_KEY`` is compared in constant time, so a
database leak does not leak usable tokens. Claim, heartbeat and complete check the same in
their own statements (``workers.sql.TOKEN_OWNER``), where the database compares the hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import NamedTuple

from django.conf import settings
from django.utils import timezone

from workers.models import Worker

TOKEN_PREFIX = "wk_"


def _digest(raw: str) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), raw.encode(), hashlib.sha256).hexdigest()


def mint_worker_token(worker: Worker) -> str:
    """Give ``worker`` a new token (replacing any earlier one) and return the plaintext."""
    prefix = secrets.token_hex(6)
    raw = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    Worker.objects.filter(pk=worker.pk).update(
        token_prefix=prefix, token_hash=_digest(raw), token_revoked_at=None
    )
    worker.token_prefix, worker.token_hash, worker.token_revoked_at = prefix, _digest(raw), None
    return raw


def revoke_worker_token(worker: Worker) -> None:
    now = timezone.now()
    Worker.objects.filter(pk=worker.pk).update(token_hash="", token_revoked_at=now)
    worker.token_hash, worker.token_revoked_at = "", now


class WorkerToken(NamedTuple):
    """What a presented token is checked by: its prefix (finds the row) and its keyed hash."""

    prefix: str
    digest: str


class Landed(NamedTuple):
    """A call that authenticated by token in its own statements (the claim, heartbeat and
    complete ``*_by_token``) and was decided there, for the worker ``worker_id``, with the
    call's usual ``answer``."""

    worker_id: str
    answer: object


def parse(raw: str) -> WorkerToken | None:
    """The prefix and keyed hash of ``raw``, or None when it is not shaped like a token."""
    if not isinstance(raw, str) or not raw.startswith(TOKEN_PREFIX):
        return None
    prefix, _, rest = raw[len(TOKEN_PREFIX) :].partition("_")
    if not prefix or not rest:
        return None
    return WorkerToken(prefix, _digest(raw))


def authenticate(raw: str) -> Worker | None:
    """The worker owning ``raw``, or None for a malformed, unknown or revoked token."""
    token = parse(raw)
    return owner(token) if token else None


def owner(token: WorkerToken) -> Worker | None:
    """The worker ``token`` belongs to, or None when it is unknown or revoked: the newest
    unrevoked worker with its prefix, if its stored hash is the token's. The fenced calls'
    statements by token (``workers.sql.TOKEN_OWNER``) ask the same in SQL."""
    worker = Worker.objects.filter(token_prefix=token.prefix, token_revoked_at__isnull=True).first()
    if worker is None or not worker.token_hash:
        return None
    if not hmac.compare_digest(worker.token_hash, token.digest):
        return None
    return worker
