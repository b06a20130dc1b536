"""Claim, heartbeat and complete through the worker API cost a fixed number of queries,
whatever is queued (ARCHITECTURE.md: query counts are tested)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from agents.models import RuntimeConfig
from workers.models import Message

API = "/api/v1/worker"


def seed(enqueue, size: int) -> None:
    """``size`` messages in the worker's own conversation and ``size`` other conversations
    with work, half of them busy (a live lease) so a claim must look past them."""
    for n in range(size):
        enqueue("mine", "alpha", f"own {n}")
        enqueue(f"other-{n}", "alpha", f"other {n}", priority=90)
    others = Message.objects.filter(conversation__conversation_id__startswith="other-")
    busy = [m.pk for m in others.order_by("pk")][::2]
    Message.objects.filter(pk__in=busy).update(
        status=Message.PROCESSING,
        claimed_by="ghost",
        lease_id="x",
        lease_expires_at=timezone.now() + timezone.timedelta(minutes=5),
    )


# Per request: the token lookup, then the service's own statements. A claim (and a complete
# off PostgreSQL) opens a transaction, which inside the test's own shows as SAVEPOINT and
# RELEASE (two of the count; in production BEGIN and COMMIT are not logged as queries).
# On PostgreSQL claim, heartbeat and complete find the token's owner in their own
# statements (workers.sql.TOKEN_OWNER): a warm claim locks the worker with its conversation,
# then one statement takes the next message, both sent in one round trip outside any
# transaction of the claim's own (workers/sql_claim.py); heartbeat and complete are one
# statement each. When that round trip decides nothing (a worker's first claim, an
# unassigned one) it still found the worker, and the full claim follows without a lookup.
# An unassigned claim reads the few conversations worth looking at off the queue marker
# (ConversationQueue), then locks its candidate's conversation in the candidate query itself.
POSTGRES = {"warm claim": 2, "first claim": 8, "unassigned claim": 8, "heartbeat": 1, "complete": 1}
SQLITE = {"warm claim": 8, "first claim": 9, "unassigned claim": 9, "heartbeat": 2, "complete": 5}


def budget(what: str) -> int:
    return (POSTGRES if connection.vendor == "postgresql" else SQLITE)[what]


@pytest.fixture(autouse=True)
def steady_state(monkeypatch, runtime_config):
    """As in a running server: the runtime config is in the per-process cache (it is read
    at most every two seconds), and no reconcile trigger runs inline."""
    monkeypatch.setattr("workers.triggers.request_reconcile", lambda: None)
    monkeypatch.setattr(RuntimeConfig, "get_cached", classmethod(lambda cls: runtime_config))


@pytest.fixture
def post(worker_api, django_assert_num_queries):
    """post(token, what, path, body): the answer's JSON, after asserting ``what``'s budget."""

    def call(token: str, what: str, path: str, body: dict) -> dict:
        with django_assert_num_queries(budget(what)):
            response = worker_api(token).post(f"{API}/{path}", body, format="json")
        assert response.status_code == 200, response.content
        return response.json()

    return call


@pytest.mark.parametrize("size", [1, 50])
def test_claim_heartbeat_complete_cost_the_same_whatever_is_queued(
    alpha_agent, enqueue, make_worker, post, size
):
    seed(enqueue, size)
    enqueue("mine", "alpha", "one more, for the warm claim")
    _, token = make_worker("w-a", heartbeat_at=timezone.now())
    mine = {"conversation_id": "mine"}

    job = post(token, "first claim", "claim/", mine)["job"]
    assert job["conversation_id"] == "mine"
    lease = {"lease_id": job["lease_id"]}
    post(token, "heartbeat", f"jobs/{job['message_id']}/heartbeat/", lease)
    post(token, "complete", f"jobs/{job['message_id']}/complete/", lease)
    # the warm path: the worker's next job in its own conversation
    assert post(token, "warm claim", "claim/", mine)["job"]["conversation_id"] == "mine"


@pytest.mark.parametrize("size", [1, 50])
def test_an_unassigned_claim_over_the_whole_queue_costs_the_same(
    alpha_agent, enqueue, make_worker, post, size
):
    seed(enqueue, size)
    _, token = make_worker("w-a", heartbeat_at=timezone.now())
    job = post(token, "unassigned claim", "claim/", {})["job"]
    # past the busy conversations (other-0, other-2, ...) to the best free one
    assert job["conversation_id"] == ("other-1" if size > 1 else "mine")
