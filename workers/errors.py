"""The queue's domain errors, with the HTTP answer the worker API gives for each (SPEC §7)."""

from __future__ import annotations

from agents.errors import DomainError


class LeaseLost(DomainError):
    """The caller does not hold a live lease on the message; nothing was changed."""

    status_code = 409
    code = "lease_lost"
    default_detail = (
        "The lease is not held by this worker any more (expired, released or never held)."
    )
