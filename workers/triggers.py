"""Fire-and-forget triggers run after commit (django-q2)."""

from __future__ import annotations


def request_reconcile() -> None:
    """Ask for a reconcile pass soon. Coalesced: many enqueues in a burst cause one pass.

    Placeholder until the autoscaling reconcile lands (issue 5); enqueue already calls it.
    """
