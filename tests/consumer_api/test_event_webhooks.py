"""Event webhooks to the host app (SPEC §15), end to end: each of the five events raised by
the real code path (consumer API, pairing service, worker API, budget cap) reaches a
loopback receiver signed with the key's secret; retries with backoff for 24 h; each event
once to a receiver that recovers; nothing for a rolled-back change; scope filtering."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from agents.consumer_api.event_models import EventDelivery
from agents.consumer_api.event_sender import drain_events
from agents.models import AgentProfile
from telegram.models import IdentityBinding
from telegram.pairing import bind_identity, consume_pairing_code, revoke_binding
from tests.conftest import post_job
from tests.consumer_api.webhook_receiver import Receiver
from workers.queue import enqueue_message

pytestmark = pytest.mark.django_db
WORKER_API = "/api/v1/worker"


@pytest.fixture
def receiver():
    made = []

    def make(statuses=None, default_status=200):
        made.append(Receiver(statuses, default_status))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def hooked(world, make_key, receiver):
    """A read-write key of tenant ``default`` with a webhook to a loopback receiver."""
    r = receiver()
    created = make_key(webhook_url=r.url)
    return r, created


@pytest.fixture
def after_commit(django_capture_on_commit_callbacks):
    """Run a block as its own committed change: its on-commit sends happen at its end."""

    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return run


@pytest.fixture
def job_for(make_worker, worker_api):
    """Enqueue a message of consumer user 42 to alpha and claim it (one worker, like a warm
    worker serving its conversation)."""
    holder = {}

    def make(max_attempts=3):
        enqueue_message(
            conversation_id="user-agent:alpha:42",
            agent_key="alpha",
            payload={
                "provider": "telegram",
                "provider_user_id": "555",
                "message_text": "hello",
                "metadata": {"consumer_user_id": "42"},
            },
            max_attempts=max_attempts,
        )
        if not holder:
            holder["client"] = worker_api(make_worker(heartbeat_at=timezone.now())[1])
        client = holder["client"]
        job = client.post(f"{WORKER_API}/claim/", {}, format="json").json()["job"]
        return client, job

    return make


def test_each_event_reaches_the_receiver_signed(hooked, api, after_commit, job_for):
    r, created = hooked
    client = api(created.key)

    # pairing.completed: a code made through the API, consumed as the webhook does on /start.
    code = client.post(
        "/api/v1/pairings/", {"consumer_user_id": "42", "agent_key": "alpha"}, format="json"
    ).json()["code"]
    binding = after_commit(
        consume_pairing_code,
        code,
        bot_identity="1000",
        telegram_user_id="555",
        telegram_chat_id="555",
    )
    # message.replied: the worker completes the job with a reply the server delivers.
    worker, job = job_for()
    answer = after_commit(post_job, worker, job, "complete", reply={"text": "Hi!"})
    assert answer.status_code == 200
    # message.dead_lettered: a job whose only attempt fails.
    worker, job = job_for(max_attempts=1)
    assert after_commit(post_job, worker, job, "fail", error="boom").status_code == 200
    # budget.paused: a completion whose cost reaches the agent's monthly cap.
    AgentProfile.objects.filter(agent_key="alpha").update(monthly_budget_usd=Decimal("1"))
    worker, job = job_for()
    usage = {"input_tokens": 1, "output_tokens": 1, "cost_usd": "1.5"}
    assert after_commit(post_job, worker, job, "complete", usage=usage).status_code == 200
    # binding.revoked: DELETE through the consumer API.
    response = after_commit(client.delete, f"/api/v1/bindings/{binding.pk}/")
    assert response.status_code == 200

    events = r.events(created.webhook_secret)  # every signature checked
    assert [e["type"] for e in events] == [
        "pairing.completed",
        "message.replied",
        "message.dead_lettered",
        "budget.paused",
        "binding.revoked",
    ]
    for event in events:
        assert event["id"].startswith("evt_") and event["created_at"].endswith("Z")
        assert (event["tenant"], event["agent_key"]) == ("default", "alpha")
    paired, replied, dead, paused, revoked = (e["data"] for e in events)
    assert paired == {
        "pairing_code": code,
        "binding_id": binding.pk,
        "conversation_id": "user-agent:alpha:42",
        "telegram_user_id": "555",
    }
    assert replied["conversation_id"] == "user-agent:alpha:42" and replied["message_id"]
    assert dead["attempts"] == 1 and "error" not in dead  # the error text stays inside
    assert paused == {
        "scope": "agent",
        "month": f"{timezone.now():%Y-%m}",
        "spent_usd": "1.500000",
        "cap_usd": "1.00",
    }
    assert revoked == {
        "binding_id": binding.pk,
        "conversation_id": "user-agent:alpha:42",
        "reason": "revoked",
    }
    assert [e["consumer_user_id"] for e in events] == ["42", "42", "42", None, "42"]
    headers = r.requests[0]["headers"]
    assert headers["X-Agent-Factory-Event"] == "pairing.completed"
    assert headers["X-Agent-Factory-Event-Id"] == events[0]["id"]
    assert EventDelivery.objects.filter(status="delivered").count() == 5


def test_a_worker_that_sends_its_own_reply_reports_it_once(hooked, after_commit, job_for):
    """``delivery: worker`` (compatibility mode): the worker sends the reply itself and says
    ``delivered``; that is when the host app hears ``message.replied`` — once, however often
    the worker repeats it, and not again at the reply-less complete."""
    r, created = hooked
    AgentProfile.objects.filter(agent_key="alpha").update(delivery=AgentProfile.WORKER_DELIVERY)
    worker, job = job_for()
    assert after_commit(post_job, worker, job, "delivered").status_code == 200
    assert after_commit(post_job, worker, job, "delivered").status_code == 200
    assert after_commit(post_job, worker, job, "complete").status_code == 200

    events = r.events(created.webhook_secret)
    assert [e["type"] for e in events] == ["message.replied"]
    assert events[0]["consumer_user_id"] == "42"
    assert events[0]["data"] == {
        "message_id": job["message_id"],
        "conversation_id": "user-agent:alpha:42",
    }


def test_a_replaced_binding_is_reported_with_its_reason(hooked, after_commit, world):
    r, created = hooked
    first = bind_identity("42", world["alpha"], bot_identity="1000", actor="t")
    r.requests.clear()
    after_commit(bind_identity, "42", world["beta"], bot_identity="1001", actor="t")
    [event] = r.events(created.webhook_secret)
    assert event["type"] == "binding.revoked"
    assert event["data"] == {
        "binding_id": first.pk,
        "conversation_id": first.conversation_id,
        "reason": "replaced",
    }


def test_a_rolled_back_change_sends_nothing(hooked, world, django_capture_on_commit_callbacks):
    r, _ = hooked
    binding = bind_identity("42", world["alpha"], bot_identity="1000", actor="t")
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        assert revoke_binding(binding, actor="t")
        raise RuntimeError("the request failed after the revoke")
    assert not EventDelivery.objects.exists() and callbacks == [] and r.requests == []
    assert IdentityBinding.objects.get(pk=binding.pk).status == "active"


def test_only_keys_whose_scope_includes_the_agent_hear_of_it(
    world, make_key, receiver, after_commit
):
    everything, narrowed_alpha, narrowed_beta, other_tenant, silent = (receiver() for _ in range(5))
    make_key(webhook_url=everything.url)
    make_key(agents=["alpha"], webhook_url=narrowed_alpha.url)
    make_key(agents=["beta"], webhook_url=narrowed_beta.url)
    make_key(tenant="acme", webhook_url=other_tenant.url)
    revoked = make_key(webhook_url=silent.url).api_key
    revoked.revoked = True
    revoked.save()
    make_key()  # no webhook at all
    binding = bind_identity("42", world["alpha"], bot_identity="1000", actor="t")
    after_commit(revoke_binding, binding, actor="t")
    assert len(everything.requests) == len(narrowed_alpha.requests) == 1
    assert narrowed_beta.requests == other_tenant.requests == silent.requests == []
    assert EventDelivery.objects.count() == 2


def test_the_global_cap_tells_every_subscribed_key_without_the_total(
    world, make_key, receiver, after_commit
):
    from agents import budget
    from agents.models import RuntimeConfig

    default_r, acme_r = receiver(), receiver()
    default_key = make_key(webhook_url=default_r.url)
    acme_key = make_key(tenant="acme", webhook_url=acme_r.url)
    config = RuntimeConfig.get()
    config.monthly_budget_usd = Decimal("1")
    config.save()
    after_commit(budget.add_spend, "alpha", Decimal("2"), timezone.now())
    [ours] = default_r.events(default_key.webhook_secret)
    [theirs] = acme_r.events(acme_key.webhook_secret)
    assert (ours["type"], ours["agent_key"], ours["data"]["scope"]) == (
        "budget.paused",
        None,
        "all_agents",
    )
    assert theirs["tenant"] == "acme" and "spent_usd" not in theirs["data"]


def test_a_failing_receiver_gets_retries_with_backoff_then_each_event_once(
    world, make_key, receiver, after_commit
):
    r = receiver(statuses=[500, 500, 503])
    created = make_key(webhook_url=r.url)
    bindings = [
        bind_identity(f"u{n}", world["alpha"], bot_identity="1000", actor="t") for n in (1, 2)
    ]
    start = timezone.now()
    for binding in bindings:
        after_commit(revoke_binding, binding, actor="t")  # first attempts: 500, 500
    rows = list(EventDelivery.objects.order_by("pk"))
    assert [(row.status, row.attempts, row.last_error) for row in rows] == [
        ("pending", 1, "HTTP 500"),
        ("pending", 1, "HTTP 500"),
    ]
    assert rows[0].next_attempt_at - start < dt.timedelta(seconds=3)  # 1 s backoff
    assert drain_events(now=start)["recovered"] == 0 and len(r.requests) == 2  # not yet due
    drain_events(now=start + dt.timedelta(seconds=5))  # 503 for the first, 200 the second
    first = EventDelivery.objects.get(pk=rows[0].pk)
    assert (first.status, first.attempts, first.response_status) == ("pending", 2, 503)
    assert first.next_attempt_at >= start + dt.timedelta(seconds=5 + 2)  # doubled
    drain_events(now=start + dt.timedelta(seconds=60))
    for _ in range(3):  # nothing left to send: the recovered receiver got each event once
        drain_events(now=start + dt.timedelta(hours=1))
    assert set(EventDelivery.objects.values_list("status", flat=True)) == {"delivered"}
    events = r.events(created.webhook_secret)
    delivered = [e["id"] for e, req in zip(events, r.requests, strict=True)]
    assert len(r.requests) == 5 and sorted(set(delivered)) == sorted(
        EventDelivery.objects.values_list("event_id", flat=True)
    )
    acknowledged = delivered[3:]  # the two answers after the three failures
    assert sorted(acknowledged) == sorted(set(delivered))


def test_after_24_hours_of_failures_the_delivery_fails_with_the_reason(
    world, make_key, receiver, after_commit
):
    r = receiver(default_status=500)
    make_key(webhook_url=r.url)
    binding = bind_identity("42", world["alpha"], bot_identity="1000", actor="t")
    start = timezone.now()
    after_commit(revoke_binding, binding, actor="t")
    clock = start
    while clock < start + dt.timedelta(hours=25):
        clock += dt.timedelta(minutes=30)
        drain_events(now=clock)
    row = EventDelivery.objects.get()
    assert row.status == "failed" and row.last_error.startswith("gave up after ")
    assert row.last_error.endswith("HTTP 500") and row.attempts == len(r.requests)
    # Backoff: never more than an hour apart, so about one try per half hour at the end.
    assert 20 < row.attempts < 60
    drain_events(now=clock + dt.timedelta(hours=1))
    assert len(r.requests) == row.attempts  # failed rows are not sent again by themselves


def test_an_unreachable_receiver_is_retried(world, make_key, receiver, after_commit):
    r = receiver()
    url = r.url
    r.close()
    make_key(webhook_url=url)
    binding = bind_identity("42", world["alpha"], bot_identity="1000", actor="t")
    after_commit(revoke_binding, binding, actor="t")
    row = EventDelivery.objects.get()
    assert row.status == "pending" and row.last_error.startswith("no answer: ")


def test_no_secret_in_logs_or_delivery_rows(hooked, world, after_commit, caplog):
    r, created = hooked
    r.statuses = [500]
    caplog.set_level(logging.DEBUG)
    binding = bind_identity("42", world["alpha"], bot_identity="1000", actor="t")
    after_commit(revoke_binding, binding, actor="t")
    drain_events(now=timezone.now() + dt.timedelta(minutes=1))
    secret = created.webhook_secret
    assert EventDelivery.objects.get().status == "delivered"
    assert secret not in caplog.text
    for row in EventDelivery.objects.values():
        assert secret not in str(row)
    from agents.models import AuditEvent

    assert all(secret not in str(a.details) for a in AuditEvent.objects.all())


def test_the_schedule_sends_what_the_after_commit_send_missed(hooked, world):
    """The task after commit was lost (a crash), and another row's sender died mid-request:
    the every-minute drain sends the first and recovers the second (counted)."""
    r, created = hooked
    binding = bind_identity("42", world["alpha"], bot_identity="1000", actor="t")
    assert revoke_binding(binding, actor="t")  # committed with the test, never sent
    lost = EventDelivery.objects.get()
    stuck = EventDelivery.objects.create(
        api_key=created.api_key,
        event_id="evt_stuck",
        event_type="binding.revoked",
        body=lost.body.replace(lost.event_id, "evt_stuck"),
        status="sending",
        attempts=1,
        sending_since=timezone.now() - dt.timedelta(minutes=5),
        give_up_at=timezone.now() + dt.timedelta(hours=23),
    )
    assert r.requests == []
    counts = drain_events()
    assert counts["recovered"] == 1 and counts["delivered"] == 2
    stuck.refresh_from_db()
    assert (stuck.status, stuck.stuck_retries, stuck.attempts) == ("delivered", 1, 2)
    assert sorted(e["id"] for e in r.events(created.webhook_secret)) == sorted(
        [lost.event_id, "evt_stuck"]
    )
