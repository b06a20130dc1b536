"""Heartbeat and complete by token (``leases.heartbeat_by_token``, ``leases.complete_by_token``,
``sql.write_by_token``): one statement that authenticates and writes. Whatever the case,
it writes exactly what the usual path (look the token's owner up, then the fenced write)
writes when that lands, and nothing at all when it does not, leaving the answer (401, the
lease lost) to the usual path. Its twin is that usual path, the only one off PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction
from django.utils import timezone

from workers import leases, tokens
from workers.models import Message, Worker
from workers.tokens import mint_worker_token, revoke_worker_token

pytestmark = pytest.mark.postgres

NOW = timezone.now().replace(microsecond=0)
CALLS = {
    "heartbeat": (leases.heartbeat_by_token, leases.heartbeat_job),
    "complete": (leases.complete_by_token, leases.complete_job),
}
SCENARIOS = [
    "live lease",
    "liveness due",
    "liveness fresh",
    "never beat",
    "lease ran out",
    "another lease",
    "another worker's job",
    "job done",
    "revoked token",
    "unknown prefix",
    "wrong secret",
    "a newer worker has the prefix",
    "no lease id",
]
LANDS = {"live lease", "liveness due", "liveness fresh", "never beat"}


class _Undo(Exception):
    pass


def _rolled_back(run):
    """``run()``'s result and the rows it left, then undone."""
    try:
        with transaction.atomic():
            result = run(), list(Message.objects.order_by("pk").values())
            result += (list(Worker.objects.order_by("pk").values()),)
            raise _Undo
    except _Undo:
        return result


def _by_token(call, raw: str, message_id: int, lease_id: str):
    def run():
        landed = call(tokens.parse(raw), message_id, lease_id)
        return None if landed is None else ("landed", landed.worker_id, landed.answer)

    return _rolled_back(run)


def _usual(call, raw: str, message_id: int, lease_id: str):
    def run():
        worker = tokens.authenticate(raw)
        if worker is None:
            return ("unauthorized",)
        try:
            return ("landed", worker.worker_id, call(worker, message_id, lease_id))
        except leases.LeaseLost:
            return ("lease lost",)

    return _rolled_back(run)


@pytest.mark.parametrize("kind", CALLS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_by_token_writes_what_the_usual_path_writes_or_nothing(
    alpha_agent, enqueue, make_worker, monkeypatch, runtime_config, kind, scenario
):
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    monkeypatch.setattr(
        "agents.models.RuntimeConfig.get_cached", classmethod(lambda cls: runtime_config)
    )
    message = enqueue("c-1", "alpha", "hello")
    worker, raw = make_worker("w-a", heartbeat_at=NOW - dt.timedelta(seconds=5))
    other, other_raw = make_worker("w-b", heartbeat_at=NOW)
    lease_id, expires = "lease-a", NOW + dt.timedelta(minutes=5)
    status, claimed_by = Message.PROCESSING, "w-a"
    if scenario == "liveness due":
        Worker.objects.filter(pk=worker.pk).update(heartbeat_at=NOW - dt.timedelta(minutes=10))
    elif scenario == "never beat":
        Worker.objects.filter(pk=worker.pk).update(heartbeat_at=None)
    elif scenario == "lease ran out":
        expires = NOW - dt.timedelta(seconds=1)
    elif scenario == "another worker's job":
        claimed_by = "w-b"
    elif scenario == "job done":
        status = Message.DONE
    elif scenario == "revoked token":
        revoke_worker_token(worker)
    elif scenario == "unknown prefix":
        raw = "wk_000000000000_" + raw.rsplit("_", 1)[1]
    elif scenario == "wrong secret":
        raw = raw.rsplit("_", 1)[0] + "_not-the-secret"
    elif scenario == "a newer worker has the prefix":
        # The owner is the newest unrevoked worker with the prefix, whatever the hash says.
        Worker.objects.filter(pk=other.pk).update(
            token_prefix=tokens.parse(raw).prefix, created_at=worker.created_at + dt.timedelta(1)
        )
    Message.objects.filter(pk=message.pk).update(
        status=status, claimed_by=claimed_by, lease_id=lease_id, lease_expires_at=expires
    )
    asked_lease = {"another lease": "lease-b", "no lease id": ""}.get(scenario, lease_id)
    untouched = _rolled_back(lambda: None)[1:]

    one_statement, usual = CALLS[kind]
    fast = _by_token(one_statement, raw, message.pk, asked_lease)
    slow = _usual(usual, raw, message.pk, asked_lease)

    if scenario in LANDS:
        assert fast == slow and fast[0][:2] == ("landed", "w-a")
        assert fast[1:] != untouched  # it wrote (the same as the usual path)
    else:
        assert fast[0] is None and fast[1:] == untouched  # nothing written
        assert slow[0][0] != "landed"
    if scenario == "liveness due" or (kind == "complete" and scenario in LANDS):
        assert fast[2][0]["heartbeat_at"] == NOW
    if kind == "heartbeat" and scenario == "liveness fresh":
        assert fast[2][0]["heartbeat_at"] == NOW - dt.timedelta(seconds=5)  # no write needed


def test_by_token_is_one_statement_and_follows_the_current_token(
    alpha_agent, enqueue, make_worker, django_assert_num_queries
):
    message = enqueue("c-1", "alpha", "hello")
    worker, raw = make_worker("w-a", heartbeat_at=timezone.now())

    def lease() -> None:
        Message.objects.filter(pk=message.pk).update(
            status=Message.PROCESSING,
            claimed_by="w-a",
            lease_id="lease-a",
            lease_expires_at=timezone.now() + dt.timedelta(minutes=5),
        )

    lease()
    token = tokens.parse(raw)
    with django_assert_num_queries(1):
        assert leases.heartbeat_by_token(token, message.pk, "lease-a").worker_id == "w-a"
    with django_assert_num_queries(1):
        assert leases.complete_by_token(token, message.pk, "lease-a").worker_id == "w-a"
    assert Message.objects.get(pk=message.pk).status == Message.DONE
    # A newly minted token replaces the old one at once.
    lease()
    new_token = tokens.parse(mint_worker_token(worker))
    assert leases.heartbeat_by_token(token, message.pk, "lease-a") is None
    assert leases.heartbeat_by_token(new_token, message.pk, "lease-a").worker_id == "w-a"
