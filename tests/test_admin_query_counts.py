"""Every admin changelist costs the same number of queries with 1 row and with 50 (no N+1).

The lists are taken from ``admin.site._registry``: a new ModelAdmin fails
``test_every_registered_list_has_a_row_maker`` until it gets a row maker here, and is then
measured like the others.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ, Schedule, Task
from django_q.signing import SignedPackage

from agents.consumer_api.event_models import EventDelivery
from agents.consumer_api.models import IdempotencyRecord
from agents.consumer_api.services import create_api_key
from agents.external_errors import ExternalApiError
from agents.models import AgentProfile, AuditEvent, Conversation, Tenant
from agents.pushing.models import (
    MessageTemplate,
    PushBroadcast,
    PushBroadcastDispatch,
    PushDispatch,
    PushJob,
    PushTemplate,
)
from agents.secret_store import import_secret
from agents.skill_bundle import file_sha256
from agents.skills import publish_skill
from telegram.models import (
    Bot,
    IdentityBinding,
    IngressIssue,
    OutboxMessage,
    PairingCode,
    SandboxMessage,
    TelegramUpdate,
)
from workers.models import DataSnapshot, JobUsage, Message, Worker

# One row by design: its list redirects to the one row's change page.
SINGLETONS = {"agents.RuntimeConfig"}
FILES = [
    {"path": path, "content": content, "sha256": file_sha256(content)}
    for path, content in [("SKILL.md", "# Demo\n"), ("scripts/index.mjs", "export default {};\n")]
]


def agent(n: int) -> AgentProfile:
    return AgentProfile.objects.create(agent_key=f"agent-{n}")


def message(n: int, **fields) -> Message:
    conversation = Conversation.objects.create(conversation_id=f"conv-{n}", agent=agent(n))
    return Message.objects.create(
        conversation=conversation, agent_key=conversation.agent.agent_key, payload={}, **fields
    )


def task(n: int, success: bool) -> Task:
    now = timezone.now()
    return Task.objects.create(
        id=uuid.uuid4().hex,
        name=f"task-{n}",
        func="math.floor",
        started=now,
        stopped=now,
        success=success,
        result=None if success else "boom",
    )


def queued_task(n: int) -> OrmQ:
    package = {"id": uuid.uuid4().hex, "name": f"q-{n}", "func": "math.floor", "group": None}
    return OrmQ.objects.create(key="default", payload=SignedPackage.dumps(package))


def push_job(n: int) -> PushJob:
    return PushJob.objects.create(
        consumer_user_id=f"u-{n}", agent=agent(n), text="hi", periodicity="daily", time="08:00"
    )


PAST = timezone.now() - dt.timedelta(hours=1)
MAKERS = {
    "auth.Group": lambda n: Group.objects.create(name=f"group-{n}"),
    "auth.User": lambda n: User.objects.create(username=f"user-{n}"),
    "django_q.Schedule": lambda n: Schedule.objects.create(
        name=f"schedule-{n}", func="math.floor", schedule_type="I", minutes=1
    ),
    "django_q.OrmQ": queued_task,
    "django_q.Success": lambda n: task(n, True),
    "django_q.Failure": lambda n: task(n, False),
    "agents.AgentProfile": agent,
    "agents.Secret": lambda n: import_secret(f"test.secret{n}", "value", actor="t"),
    "agents.Conversation": lambda n: Conversation.objects.create(
        conversation_id=f"conv-{n}", agent=agent(n)
    ),
    "agents.AuditEvent": lambda n: AuditEvent.objects.create(
        actor="t", action="test.event", target_type="x", target_id=str(n)
    ),
    # Publishing makes a skill, a version and a release each.
    "agents.ExternalApiError": lambda n: ExternalApiError.objects.create(
        service="fly", operation=f"POST /apps/a{n}/machines", status_code=500, detail="boom"
    ),
    "agents.GlobalSkill": lambda n: publish_skill(f"skill-{n}", "1.0.0", FILES, actor="t"),
    "agents.GlobalSkillVersion": lambda n: publish_skill(f"skill-{n}", "1.0.0", FILES, actor="t"),
    "agents.GlobalSkillRelease": lambda n: publish_skill(f"skill-{n}", "1.0.0", FILES, actor="t"),
    "workers.Message": message,
    "workers.DeadLetter": lambda n: message(n, status=Message.DEAD_LETTER, last_error="x"),
    "workers.ExpiredLease": lambda n: message(
        n, status=Message.PROCESSING, claimed_by="w", lease_id="l", lease_expires_at=PAST
    ),
    "workers.Worker": lambda n: Worker.objects.create(
        worker_id=f"w-{n}",
        assigned_conversation=Conversation.objects.create(conversation_id=f"c-{n}", agent=agent(n)),
    ),
    "workers.JobUsage": lambda n: JobUsage.objects.create(
        message=message(n), agent_key=f"agent-{n}", consumer_user=f"u-{n}", outcome="done"
    ),
    "workers.DataSnapshot": lambda n: DataSnapshot.objects.create(
        agent_key="a", worker_id="w", conversation_id=f"c-{n}", reason="manual"
    ),
    "agents.Tenant": lambda n: Tenant.objects.create(slug=f"tenant-{n}"),
    "consumer_api.ApiKey": lambda n: create_api_key(f"key {n}", actor="t", agent_keys=[]),
    "consumer_api.IdempotencyRecord": lambda n: IdempotencyRecord.objects.create(
        api_key=create_api_key(f"key {n}", actor="t").api_key, key=f"k{n}", fingerprint="f",
        status_code=202,
    ),
    "consumer_api.EventDelivery": lambda n: EventDelivery.objects.create(
        api_key=create_api_key(f"hook {n}", actor="t").api_key, event_id=f"evt_{n}",
        event_type="message.replied", body="{}", status=EventDelivery.FAILED,
        give_up_at=timezone.now(),
    ),
    "telegram.Bot": lambda n: Bot.objects.create(agent=agent(n), bot_identity=str(n)),
    "telegram.PairingCode": lambda n: PairingCode.objects.create(
        code=f"CODE{n}", consumer_user_id="u", agent=agent(n), expires_at=timezone.now()
    ),
    "telegram.IdentityBinding": lambda n: IdentityBinding.objects.create(
        consumer_user_id=f"u-{n}", agent=agent(n), conversation_id=f"c-{n}", bot_identity="1"
    ),
    "telegram.TelegramUpdate": lambda n: TelegramUpdate.objects.create(
        bot_identity="1", update_id=n, outcome="enqueued"
    ),
    "telegram.IngressIssue": lambda n: IngressIssue.objects.create(
        bot_identity="1", kind=IngressIssue.UNBOUND, detail="x"
    ),
    "telegram.OutboxMessage": lambda n: OutboxMessage.objects.create(
        agent_key="a", chat_id=str(n), text="hi", status=OutboxMessage.FAILED, last_error="x"
    ),
    "telegram.SandboxMessage": lambda n: SandboxMessage.objects.create(
        bot_id="1", chat_id=str(n), text="hi"
    ),
    "pushing.PushTemplate": lambda n: PushTemplate.objects.create(
        key=f"t-{n}", title="t", text="hi", periodicity="daily"
    ),
    "pushing.PushJob": push_job,
    "pushing.PushDispatch": lambda n: PushDispatch.objects.create(
        job=push_job(n), run_key=f"k-{n}", scheduled_for=PAST, agent=agent(n + 1000)
    ),
    "pushing.PushBroadcast": lambda n: PushBroadcast.objects.create(text=f"hi {n}"),
    "pushing.PushBroadcastDispatch": lambda n: PushBroadcastDispatch.objects.create(
        broadcast=PushBroadcast.objects.create(text="hi"), consumer_user_id=f"u-{n}", agent=agent(n)
    ),
    "pushing.MessageTemplate": lambda n: MessageTemplate.objects.create(
        slug=f"m-{n}", title="m", text="hi"
    ),
    "fly.FlyCleanupRun": lambda n: AuditEvent.objects.create(
        actor="t", action="fly.cleanup", target_type="fly_app", target_id=f"app-{n}"
    ),
}
LISTS = sorted(model._meta.label for model in admin.site._registry)


def test_every_registered_list_has_a_row_maker():
    assert set(LISTS) - SINGLETONS == set(MAKERS)


def changelist(label: str) -> str:
    app_label, model = label.lower().split(".")
    return reverse(f"admin:{app_label}_{model}_changelist")


def rows_listed(admin_client, url: str) -> int:
    response = admin_client.get(url)
    assert response.status_code == 200
    return response.context["cl"].result_count


@pytest.mark.parametrize("label", [label for label in LISTS if label not in SINGLETONS])
def test_changelist_queries_do_not_grow_with_rows(admin_client, label, django_assert_num_queries):
    make, url = MAKERS[label], changelist(label)
    make(0)
    rows_listed(admin_client, url)  # warm the per-process caches (content types, config)
    with CaptureQueriesContext(connection) as one_row:
        shown = rows_listed(admin_client, url)
    for n in range(1, 50):
        make(n)
    with django_assert_num_queries(len(one_row)):
        assert rows_listed(admin_client, url) == shown + 49
