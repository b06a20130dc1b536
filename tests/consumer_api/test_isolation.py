"""Tenant and scope isolation for EVERY /api/v1/ route, generated from the URL list.

For each consumer API route and each method its view implements, a key calls it with the
path parameters, query parameters and body of data it may not see (another tenant's, or an
agent outside a narrowed key): a read answers 404 or carries none of that data, a write
answers 404 and changes nothing. A new route is covered as soon as it is added; a new path
parameter name fails here until FOREIGN says which foreign value to use.
"""

from __future__ import annotations

import json

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from agents.models import Conversation, ConversationEntry
from agents.pushing.models import MessageTemplate, PushBroadcast, PushJob, PushTemplate
from agents.pushing.services import save_push_job, send_broadcast
from agents.pushing.template_services import save_message_template, save_push_template
from telegram.models import IdentityBinding, PairingCode
from telegram.pairing import bind_identity, create_pairing_code
from workers.models import DataSnapshot, JobUsage, Message
from workers.queue import enqueue_message

pytestmark = pytest.mark.django_db

SHARED_USER = "shared-user"  # the same consumer id in both scopes
# The other tenant's Telegram id, looked for in every answer: long enough that no timestamp
# or small id can contain it by chance (a 3-digit id once matched a timestamp's microseconds).
FOREIGN_TELEGRAM_ID = "7770001234"
METHODS = ["get", "post", "put", "patch", "delete"]


def consumer_routes():
    """(path template, view class) of every route under /api/v1/ except the worker API."""
    routes = []

    def walk(patterns, prefix):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                view = getattr(pattern.callback, "view_class", None)
                routes.append((prefix + str(pattern.pattern), view))

    walk(get_resolver().url_patterns, "/")
    return [
        (path, view)
        for path, view in routes
        if path.startswith("/api/v1/") and not path.startswith("/api/v1/worker/")
    ]


def foreign_world(agent):
    """Everything a key must not see, around ``agent`` (another tenant's or out of scope)."""
    binding = bind_identity(
        SHARED_USER,
        agent,
        bot_identity=agent.bot.bot_identity,
        telegram_user_id=FOREIGN_TELEGRAM_ID,
        telegram_chat_id=FOREIGN_TELEGRAM_ID,
        source="api",
        actor="test",
    )
    pairing = create_pairing_code(SHARED_USER, agent.agent_key, actor="test")
    message = enqueue_message(
        conversation_id=binding.conversation_id,
        agent_key=agent.agent_key,
        payload={
            "provider": "telegram",
            "provider_user_id": FOREIGN_TELEGRAM_ID,
            "message_text": "secret",
        },
    ).message
    conversation = Conversation.objects.get(conversation_id=binding.conversation_id)
    ConversationEntry.objects.create(conversation=conversation, role="user", content="secret")
    DataSnapshot.objects.create(
        agent_key=agent.agent_key,
        worker_id="w",
        conversation_id=binding.conversation_id,
        reason="manual",
    )
    job = save_push_job(
        actor="test",
        text="secret",
        periodicity="daily",
        schedule={"time": "08:00"},
        consumer_user_id=SHARED_USER,
        agent_key=agent.agent_key,
    )
    broadcast = send_broadcast("secret", actor="test", agent_keys=[agent.agent_key])
    # The agent's own templates (a narrowed key sees its tenant's shared ones by design).
    push_template = save_push_template(
        actor="test",
        key="foreign-push",
        title="secret",
        text="secret",
        periodicity="daily",
        tenant=agent.tenant,
        agent_key=agent.agent_key,
    )
    message_template = save_message_template(
        actor="test",
        title="Foreign note",
        text="secret",
        tenant=agent.tenant,
        agent_key=agent.agent_key,
    )
    JobUsage.objects.create(
        message=message,
        agent_key=agent.agent_key,
        consumer_user=SHARED_USER,
        input_tokens=5,
        output_tokens=5,
        cost_usd="1",
        outcome="done",
    )
    return {
        "agent_key": agent.agent_key,
        "consumer_user_id": SHARED_USER,
        "code": pairing.code,
        "pk": {
            "bindings": binding.pk,
            "push-jobs": job.pk,
            "broadcasts": broadcast.pk,
            "push-templates": push_template.pk,
        },
        "slug": message_template.slug,
        "conversation_id": binding.conversation_id,
        "bot_identity": agent.bot.bot_identity,
        "telegram_user_id": FOREIGN_TELEGRAM_ID,
        "month": message.created_at.strftime("%Y-%m"),
    }


def fill(path: str, values: dict) -> str:
    import re

    resource = path.removeprefix("/api/v1/").split("/")[0]

    def value(match):
        name = match.group(2)
        assert name in values, f"Add a foreign value for path parameter '{name}'."
        found = values[name]
        if isinstance(found, dict):  # per resource (``pk`` of bindings, push jobs, …)
            assert resource in found, f"Add a foreign '{name}' for '{resource}/'."
            found = found[resource]
        return str(found)

    return re.sub(r"<(?:(\w+):)?(\w+)>", value, path)


def state():
    return (
        list(IdentityBinding.objects.order_by("pk").values_list("pk", "status")),
        list(PairingCode.objects.order_by("pk").values_list("pk", "status")),
        Message.objects.count(),
        list(PushJob.objects.order_by("pk").values_list("pk", "text", "enabled")),
        PushBroadcast.objects.count(),
        list(PushTemplate.objects.order_by("pk").values_list("pk", "key", "text", "agent_id")),
        list(
            MessageTemplate.objects.order_by("pk").values_list("pk", "slug", "text", "usage_count")
        ),
    )


@pytest.fixture(params=["other-tenant", "narrowed-key"])
def scope(request, world, make_key, api):
    """(client, foreign values, foreign agent key) for one way of being out of scope."""
    if request.param == "other-tenant":
        client, foreign_agent = api(make_key(tenant="acme").key), world["alpha"]
    else:
        client, foreign_agent = api(make_key(agents=["alpha"]).key), world["beta"]
    if request.param == "other-tenant":  # the other tenant's shared templates, too
        save_push_template(
            actor="test", key="shared-push", title="secret", text="secret", periodicity="manual"
        )
        save_message_template(actor="test", title="Shared note", text="secret")
    # The caller's own user with the same consumer id, so "separate" is really tested.
    own = world["gamma"] if request.param == "other-tenant" else world["alpha"]
    bind_identity(
        SHARED_USER,
        own,
        bot_identity=own.bot.bot_identity,
        telegram_user_id="888",
        source="api",
        actor="test",
    )
    return client, foreign_world(foreign_agent), foreign_agent.agent_key


def test_every_consumer_route_is_checked(scope):
    client, values, foreign_key = scope
    routes = consumer_routes()
    assert len(routes) >= 15, routes
    checked = []
    for template, view in routes:
        path = fill(template, values)
        for method in METHODS:
            if not hasattr(view, method):
                continue
            before = state()
            call = getattr(client, method)
            if method == "get":
                # Every filter set to the foreign value.
                response = call(path, {k: v for k, v in values.items() if k != "pk"})
            else:
                # A body valid in every way but its scope, so only the scope can refuse it.
                body = {
                    **values,
                    "text": "x",
                    "telegram_chat_id": FOREIGN_TELEGRAM_ID,
                    "periodicity": "daily",
                    "schedule": {"time": "08:00"},
                    "agent_keys": [foreign_key],
                    "key": "new-template",
                    "title": "x",
                    "suggested_times": [],
                }
                body.pop("pk")
                response = call(path, body, format="json")
            text = response.content.decode()
            where = f"{method.upper()} {template}"
            assert response.status_code < 500, (where, text)
            if method == "get":
                assert response.status_code in (200, 404), (where, text)
                if response.status_code == 200:
                    data = json.dumps(response.json())
                    assert f'"{foreign_key}"' not in data, (where, data)
                    assert values["conversation_id"] not in data, (where, data)
                    assert FOREIGN_TELEGRAM_ID not in data and "secret" not in data, (where, data)
            else:
                assert response.status_code == 404, (where, text)
                assert state() == before, where
            checked.append(where)
    assert {w.split(" ", 1)[1] for w in checked} == {t for t, _ in routes}
