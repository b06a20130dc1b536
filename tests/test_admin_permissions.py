"""Every admin door checks the model permission it exercises (SPEC §16).

A door is a custom admin view, an onboarding step, an overridden ModelAdmin view or an
admin action. ``DOORS`` lists each with the permission(s) it needs; the tests run over that
table: a staff user with every permission except those is refused (403, or the action is not
offered and a forged POST changes nothing), so is view-only staff, and a staff user with
exactly those permissions succeeds. ``test_every_admin_door_is_in_the_table`` enumerates
the registered actions, custom URLs and overridden views, so a new door cannot be added
without a row here (and so without a permission).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import responses
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.actions import delete_selected
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from django_q.models import Failure, Success, Task

from agents.admin_access import DENIED
from agents.consumer_api.event_models import EventDelivery
from agents.consumer_api.services import create_api_key
from agents.models import (
    AgentProfile,
    AuditEvent,
    ConversationEntry,
    GlobalSkillRelease,
    GlobalSkillVersion,
    RuntimeConfig,
    Secret,
)
from agents.pushing.models import PushBroadcast, PushBroadcastDispatch, PushDispatch, PushJob
from agents.secret_store import import_secret
from agents.skill_bundle import file_sha256
from agents.skills import publish_skill
from telegram.admin_onboarding import ONBOARDING_PAGE_PERMISSIONS, STEP_PERMISSIONS
from telegram.models import (
    Bot,
    IdentityBinding,
    OutboxMessage,
    PairingCode,
    SandboxMessage,
    SandboxWebhook,
)
from tests.telegram.conftest import legacy_binding, legacy_pairing
from workers.models import Message, Worker

TG = "http://telegram.test"
FLY = "http://fly.test/v1"
FLY_APP = "af-perm"
SKILL_FILES = [
    {"path": p, "content": c, "sha256": file_sha256(c)}
    for p, c in [("SKILL.md", "# Demo\n"), ("scripts/index.mjs", "export default {};\n")]
]


@dataclass(frozen=True)
class Door:
    id: str  # action:<app>.<model>:<name> | url:<name>[#step] | view:<app>.<model>:<method>
    needs: tuple[str, ...]  # checked by the door; with these (and ``access``) it works
    act: Callable  # (client, world) -> response
    done: Callable  # (world, response) -> bool: what success looks like
    access: tuple[str, ...] = ()  # needed to reach the page, never enough alone
    # Permission sets whose removal must refuse (default: each of ``needs`` on its own).
    lacking: tuple[frozenset, ...] | None = None
    changes: bool = True  # False: a read-only door (a page, a preview, a link)
    ours: bool = True  # False: Django's own view (it refuses, but writes no audit row)

    def lacking_sets(self):
        return self.lacking or tuple(frozenset([p]) for p in self.needs)


# What the doors act on ------------------------------------------------------------------


@pytest.fixture
def world(db, enqueue, settings):
    settings.FLY_API_TOKEN = "fly-token"
    RuntimeConfig.get()
    agent = AgentProfile.objects.create(agent_key="alpha")
    import_secret("telegram.botToken.alpha", "100:TOKEN-alpha", actor="t")
    import_secret("telegram.webhookSecret.alpha", "s" * 40, actor="t")
    bot = Bot.objects.create(
        agent=agent,
        bot_identity="100",
        username="old_name",  # getMe answers alpha_bot: a reconcile changes it
        webhook_url="https://factory.test/telegram/webhook/100/",
    )
    SandboxWebhook.objects.create(bot_id="100", url=bot.webhook_url)
    SandboxMessage.objects.create(bot_id="100", chat_id="5", text="earlier reply")
    binding = IdentityBinding.objects.create(
        consumer_user_id="u1",
        agent=agent,
        conversation_id="c",
        bot_identity="100",
        telegram_chat_id="5",  # where "send as the agent" writes
    )
    legacy, code = legacy_binding(agent, "old"), legacy_pairing(agent, "old")
    message = enqueue("c", "alpha")  # the bound conversation (its page is a door)
    Message.objects.filter(pk=message.pk).update(status="dead_letter", attempts=5)
    worker = Worker.objects.create(worker_id="w1", heartbeat_at=timezone.now())
    other = get_user_model().objects.create_user("other", password="old-password")
    now = timezone.now()
    for success in (True, False):
        Task.objects.create(
            id=f"task-{success}",
            name=f"task-{success}",
            func="math.floor",
            args=(2.5,),
            started=now,
            stopped=now,
            success=success,
        )
    push_job = PushJob.objects.create(consumer_user_id="u1", text="Ping", periodicity="manual")
    failed_push = PushDispatch.objects.create(
        job=push_job, run_key="k", scheduled_for=now, status="failed", error="no binding"
    )
    failed_target = PushBroadcastDispatch.objects.create(
        broadcast=PushBroadcast.objects.create(text="x"),
        consumer_user_id="u1",
        agent=agent,
        conversation_id="c",
        status="failed",
        error="agent disabled",
    )
    failed_outbox = OutboxMessage.objects.create(
        agent_key="alpha", chat_id="5", text="hi", status="failed", last_error="403: blocked"
    )
    v1 = publish_skill("demo", "1.0.0", SKILL_FILES, actor="t")
    publish_skill("demo", "1.1.0", SKILL_FILES, actor="t")  # the active stable release
    hook_key = create_api_key("hooks", actor="t", webhook_url="https://host.example/h").api_key
    failed_event = EventDelivery.objects.create(
        api_key=hook_key,
        event_id="evt_1",
        event_type="binding.revoked",
        body="{}",
        status="failed",
        give_up_at=now,
    )
    return {
        "hook_key": hook_key,
        "failed_event": failed_event,
        "failed_outbox": failed_outbox,
        "agent": agent,
        "bot": bot,
        "binding": binding,
        "legacy": legacy,
        "code": code,
        "message": message,
        "worker": worker,
        "push_job": push_job,
        "failed_push": failed_push,
        "failed_target": failed_target,
        "v1": v1,
        "other": other,
        "success": Success.objects.get(),
        "failure": Failure.objects.get(),
    }


def telegram_answer(request):
    method = request.url.rsplit("/", 1)[-1]
    result = {
        "getMe": {"id": 100, "is_bot": True, "username": "alpha_bot", "first_name": "A"},
        "getWebhookInfo": {"url": ""},
    }.get(method, True)
    return 200, {}, json.dumps({"ok": True, "result": result})


def fly_answer(request):
    path = request.url.split("?")[0]
    return 200, {}, json.dumps([] if path.endswith(("/machines", "/volumes")) else {})


@pytest.fixture
def outside():
    """Telegram and Fly, answering everything; the tests count the calls."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.POST, re.compile(f"{TG}/bot.*"), telegram_answer)
        mock.add_callback(responses.GET, re.compile(f"{FLY}/.*"), fly_answer)
        yield mock


def fingerprint() -> dict:
    """Every row of the project's own tables: what "nothing changed" compares."""
    rows = {}
    for label in (
        "agents",
        "workers",
        "telegram",
        "fly",
        "auth",
        "django_q",
        "pushing",
        "consumer_api",
    ):
        for model in apps.get_app_config(label).get_models():
            if not model._meta.proxy:
                found = model.objects.order_by("pk")
                if model is AuditEvent:  # a refusal's own audit row is checked on its own
                    found = found.exclude(action=DENIED)
                rows[model._meta.label] = list(found.values_list())
    return rows


# The table ------------------------------------------------------------------------------


def action(label: str, name: str, needs, pick, done, *, access=(), extra=None, **kw) -> Door:
    app, model = label.split(".")

    def act(client, w):
        body = {"action": name, "_selected_action": [pick(w).pk], "confirm": "yes"}
        return client.post(reverse(f"admin:{app}_{model}_changelist"), {**body, **(extra or {})})

    return Door(f"action:{label}:{name}", tuple(needs), act, done, tuple(access), **kw)


def onboarding(step: str, done, **fields) -> Door:
    def act(client, w):
        url = reverse("admin:telegram_onboarding", args=[w["agent"].pk])
        return client.post(url, {"step": step, **fields})

    return Door(f"url:telegram_onboarding#{step}", (STEP_PERMISSIONS[step],), act, done)


def audited(name: str):
    return lambda w, r: AuditEvent.objects.filter(action=name).exists()


def status(model, key: str, value: str):
    return lambda w, r: model.objects.get(pk=w[key].pk).status == value


def released(channel: str):
    return lambda w, r: GlobalSkillRelease.objects.filter(
        version=w["v1"], channel=channel, active=True
    ).exists()


def soft_reset_done(w, r):
    return status(IdentityBinding, "legacy", "revoked")(w, r) and status(
        PairingCode, "code", "expired"
    )(w, r)


SOFT_RESET = ("telegram.change_identitybinding", "telegram.change_pairingcode")
FLY_VIEW = ("fly.view_flycleanuprun",)
# Django lets the change permission stand for view, so the preview is shut only without all.
NO_FLY = (frozenset({"fly.view_flycleanuprun", "fly.change_flycleanuprun", "fly.run_cleanup"}),)
CLEANUP_URL = "/admin/fly/flycleanuprun/run/"
SANDBOX_VIEW = ("telegram.view_sandboxmessage",)

DOORS = [
    Door(
        "url:telegram_onboarding",
        ("telegram.view_bot",),
        lambda c, w: c.get(reverse("admin:telegram_onboarding", args=[w["agent"].pk])),
        lambda w, r: r.status_code == 200 and b"Readiness" in r.content,
        lacking=(frozenset(ONBOARDING_PAGE_PERMISSIONS),),
        changes=False,
    ),
    onboarding(
        "import_token",
        lambda w, r: Secret.objects.filter(secret_ref="telegram.botToken.alpha").count() == 2,
        token="100:TOKEN-rotated",
    ),
    onboarding("configure_webhook", audited("telegram.configure_webhook")),
    onboarding("rotate_secret", audited("telegram.rotate_webhook_secret")),
    onboarding("reconcile_identity", audited("telegram.reconcile_identity")),
    onboarding(
        "create_pairing",
        lambda w, r: PairingCode.objects.filter(consumer_user_id="victim").exists(),
        consumer_user_id="victim",
        ttl_minutes=15,
    ),
    Door(
        "url:telegram_sandbox_chat",
        SANDBOX_VIEW,
        lambda c, w: c.get(reverse("admin:telegram_sandbox_chat"), {"bot": "100", "user": "5"}),
        lambda w, r: r.status_code == 200 and b'id="sandbox-transcript"' in r.content,
        changes=False,
    ),
    Door(
        "url:telegram_sandbox_chat_messages",
        SANDBOX_VIEW,
        lambda c, w: c.get(
            reverse("admin:telegram_sandbox_chat_messages"), {"bot": "100", "user": "5"}
        ),
        lambda w, r: r.status_code == 200 and r.json()["messages"][0]["text"] == "earlier reply",
        changes=False,
    ),
    Door(
        "url:telegram_sandbox_chat_send",
        ("telegram.use_sandbox_chat",),
        lambda c, w: c.post(
            reverse("admin:telegram_sandbox_chat_send"),
            {"bot": "100", "user": 5, "text": "hi"},
            content_type="application/json",
        ),
        lambda w, r: SandboxMessage.objects.filter(sender="user", text="hi").exists(),
    ),
    Door(
        "url:telegram_conversation",
        ("agents.view_conversation",),
        lambda c, w: c.get(reverse("admin:telegram_conversation", args=["c"])),
        lambda w, r: r.status_code == 200 and b'id="conversation-chat"' in r.content,
        lacking=(frozenset({"agents.view_conversation", "agents.change_conversation"}),),
        changes=False,
    ),
    Door(
        "url:telegram_conversation_send",
        ("telegram.send_as_agent",),
        lambda c, w: c.post(
            reverse("admin:telegram_conversation_send", args=["c"]),
            {"text": "An operator writes", "confirm": "yes"},
        ),
        lambda w, r: (
            ConversationEntry.objects.filter(
                role="assistant", content="An operator writes"
            ).exists()
            and AuditEvent.objects.filter(action="conversation.send_as_agent").exists()
        ),
    ),
    Door(
        "url:fly_cleanup_run#preview",
        FLY_VIEW,
        lambda c, w: c.get(CLEANUP_URL, {"app": FLY_APP}),
        lambda w, r: r.status_code == 200 and b"Dry run" in r.content,
        lacking=NO_FLY,
        changes=False,
    ),
    Door(
        "url:fly_cleanup_run#apply",
        ("fly.run_cleanup",),
        lambda c, w: c.post(CLEANUP_URL, {"app": FLY_APP, "confirm": "yes"}),
        audited("fly.cleanup"),
    ),
    Door(
        "view:agents.globalskillversion:add_view",
        ("agents.add_globalskillversion",),
        lambda c, w: c.post(
            reverse("admin:agents_globalskillversion_add"),
            {
                "slug": "fresh",
                "version": "1.0.0",
                "channel": "stable",
                "module_format": "esm",
                "bundle_json": json.dumps({"files": SKILL_FILES}),
            },
        ),
        lambda w, r: GlobalSkillVersion.objects.filter(skill__slug="fresh").exists(),
    ),
    Door(
        "view:agents.agentprofile:changelist_view",
        ("agents.view_agentprofile",),
        lambda c, w: c.get(reverse("admin:agents_agentprofile_changelist")),
        lambda w, r: r.status_code == 200 and b"Budget this month" in r.content,
        lacking=(frozenset({"agents.view_agentprofile", "agents.change_agentprofile"}),),
        changes=False,
        ours=False,  # Django's own list view refuses (the override only adds budget notices)
    ),
    Door(
        "url:workers_usage_report",
        ("workers.view_jobusage",),
        lambda c, w: c.get(reverse("admin:workers_usage_report")),
        lambda w, r: r.status_code == 200 and b'id="usage-table"' in r.content,
        lacking=(frozenset({"workers.view_jobusage", "workers.change_jobusage"}),),
        changes=False,
    ),
    Door(
        "view:agents.runtimeconfig:changelist_view",
        ("agents.view_runtimeconfig",),
        lambda c, w: c.get(reverse("admin:agents_runtimeconfig_changelist")),
        lambda w, r: r.status_code == 302 and "/change/" in r["Location"],
        lacking=(frozenset({"agents.view_runtimeconfig", "agents.change_runtimeconfig"}),),
        changes=False,
    ),
    action(
        "agents.globalskillversion",
        "activate_stable",
        ["agents.change_globalskillrelease"],
        lambda w: w["v1"],
        released("stable"),
        access=["agents.view_globalskillversion"],
    ),
    action(
        "agents.globalskillversion",
        "activate_canary",
        ["agents.change_globalskillrelease"],
        lambda w: w["v1"],
        released("canary"),
        access=["agents.view_globalskillversion"],
    ),
    action(
        "telegram.bot",
        "reconcile_identity",
        ["telegram.change_bot"],
        lambda w: w["bot"],
        lambda w, r: Bot.objects.get().username == "alpha_bot",
    ),
    action(
        "telegram.bot",
        "rotate_secret",
        ["telegram.change_bot"],
        lambda w: w["bot"],
        audited("telegram.rotate_webhook_secret"),
    ),
    action(
        "telegram.identitybinding",
        "revoke",
        ["telegram.change_identitybinding"],
        lambda w: w["binding"],
        status(IdentityBinding, "binding", "revoked"),
    ),
    *[
        action(
            label,
            "soft_reset",
            SOFT_RESET,
            lambda w, label=label: w["legacy"] if "binding" in label else w["code"],
            soft_reset_done,
            extra={"revoke_bindings": "on", "expire_pairings": "on"},
        )
        for label in ("telegram.identitybinding", "telegram.pairingcode")
    ],
    *[
        action(
            f"workers.{model}",
            "requeue",
            ["workers.change_message"],
            lambda w: w["message"],
            status(Message, "message", "queued"),
            access=[f"workers.view_{model}"] if model != "message" else [],
        )
        for model in ("message", "deadletter")
    ],
    action(
        "telegram.outboxmessage",
        "retry_selected",
        ["telegram.change_outboxmessage"],
        lambda w: w["failed_outbox"],
        lambda w, r: OutboxMessage.objects.get(pk=w["failed_outbox"].pk).status == "pending",
        access=["telegram.view_outboxmessage"],
    ),
    action(
        "consumer_api.eventdelivery",
        "retry_selected_events",
        ["consumer_api.change_eventdelivery"],
        lambda w: w["failed_event"],
        status(EventDelivery, "failed_event", "pending"),
        access=["consumer_api.view_eventdelivery"],
    ),
    action(
        "consumer_api.apikey",
        "rotate_webhook_secret",
        ["consumer_api.change_apikey"],
        lambda w: w["hook_key"],
        audited("consumer_api.set_webhook"),
    ),
    action(
        "workers.worker",
        "drain",
        ["workers.change_worker"],
        lambda w: w["worker"],
        status(Worker, "worker", "draining"),
    ),
    action(
        "workers.worker",
        "run_fly_cleanup",
        FLY_VIEW,
        lambda w: w["worker"],
        lambda w, r: r.status_code == 302 and r["Location"] == CLEANUP_URL,
        access=["workers.view_worker"],
        lacking=NO_FLY,
        changes=False,
    ),
    *[
        action(
            "pushing.pushjob",
            name,
            ["pushing.change_pushjob"],
            lambda w: w["push_job"],
            done,
        )
        for name, done in [
            (
                "trigger_now",
                lambda w, r: PushDispatch.objects.filter(job=w["push_job"], mode="manual").exists(),
            ),
            ("enable", audited("push_job.enable")),
            ("disable", audited("push_job.disable")),
        ]
    ],
    *[
        action(
            f"pushing.{model}",
            "retry",
            [f"pushing.change_{model}"],
            lambda w, key=key: w[key],
            lambda w, r, model=model, key=key: (
                apps.get_model("pushing", model).objects.get(pk=w[key].pk).status == "pending"
            ),
        )
        for model, key in [
            ("pushdispatch", "failed_push"),
            ("pushbroadcastdispatch", "failed_target"),
        ]
    ],
    Door(
        "url:pushing_broadcast_send",
        ("pushing.add_pushbroadcast",),
        lambda c, w: c.post(
            reverse("admin:pushing_broadcast_send"), {"text": "Hello all", "confirm": "yes"}
        ),
        lambda w, r: PushBroadcast.objects.filter(text="Hello all", total_targets=2).exists(),
    ),
    # Django's own password page (it checks the change permission itself), and django-q2's
    # task lists (their resubmit action is guarded in workers/admin_tasks.py).
    Door(
        "url:auth_user_password_change",
        ("auth.change_user",),
        lambda c, w: c.post(
            reverse("admin:auth_user_password_change", args=[w["other"].pk]),
            {"password1": "N3w-pass-phrase!", "password2": "N3w-pass-phrase!"},
        ),
        lambda w, r: (
            get_user_model().objects.get(pk=w["other"].pk).check_password("N3w-pass-phrase!")
        ),
        ours=False,
    ),
    action(
        "django_q.success",
        "resubmit",
        ["django_q.change_success"],
        lambda w: w["success"],
        lambda w, r: Task.objects.filter(func="math.floor").count() == 3,
    ),
    action(
        "django_q.failure",
        "resubmit",
        ["django_q.change_failure", "django_q.delete_failure"],
        lambda w: w["failure"],
        lambda w, r: not Failure.objects.filter(pk=w["failure"].pk).exists(),
    ),
]
BY_ID = {door.id: door for door in DOORS}


def door_params(doors):
    return [pytest.param(d, id=d.id) for d in doors]


# Who knocks -----------------------------------------------------------------------------


def perm_names(queryset) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in queryset}


def login_with(client, perms) -> object:
    user = get_user_model().objects.create_user("staffer", password="pw", is_staff=True)
    wanted = set(perms)
    rows = [
        p
        for p in Permission.objects.select_related("content_type")
        if f"{p.content_type.app_label}.{p.codename}" in wanted
    ]
    assert len(rows) == len(wanted), wanted - perm_names(rows)  # a typo in the table
    user.user_permissions.set(rows)
    client.force_login(user)
    return client


def every_permission() -> set[str]:
    return perm_names(Permission.objects.select_related("content_type"))


def offered_actions(client, door: Door) -> list[str]:
    app, model = door.id.split(":")[1].split(".")
    response = client.get(reverse(f"admin:{app}_{model}_changelist"))
    assert response.status_code == 200
    select = re.search(r'<select name="action".*?</select>', response.content.decode(), re.S)
    return re.findall(r'<option value="(\w+)"', select.group(0)) if select else []


def assert_refused(client, door: Door, world, outside):
    if door.id.startswith("action:"):
        assert door.id.rsplit(":", 1)[1] not in offered_actions(client, door)
    before = fingerprint()
    response = door.act(client, world)
    if door.id.startswith("action:"):
        # Django ignores an action the user is not offered ("No action selected", or, with
        # no action offered at all, the plain list again).
        assert response.status_code in (200, 302) and not door.done(world, response)
    else:
        assert response.status_code == 403
        if door.ours:  # the attempt is on the audit trail, with who and what was missing
            denied = AuditEvent.objects.get(action=DENIED)
            assert denied.actor == "staffer" and denied.details["permission"]
    assert fingerprint() == before
    assert len(outside.calls) == 0  # nothing was asked of Telegram or Fly either


# The tests ------------------------------------------------------------------------------

REFUSALS = [
    pytest.param(door, removed, id=f"{door.id}-without-{'+'.join(sorted(removed))}")
    for door in DOORS
    for removed in door.lacking_sets()
]


@pytest.mark.parametrize("door, removed", REFUSALS)
def test_refused_without_its_permission(client, world, outside, door, removed):
    """Everything else granted: the permission(s) the door checks are what decide."""
    login_with(client, every_permission() - removed)
    assert_refused(client, door, world, outside)


@pytest.mark.parametrize("door", door_params([d for d in DOORS if d.changes]))
def test_view_only_staff_can_change_nothing(client, world, outside, door):
    view_only = {p for p in every_permission() if p.split(".")[1].startswith("view_")}
    login_with(client, view_only)
    assert_refused(client, door, world, outside)


@pytest.mark.parametrize("door", door_params(DOORS))
def test_works_with_exactly_its_permission(client, world, outside, door):
    login_with(client, {*door.needs, *door.access})
    before = fingerprint()
    response = door.act(client, world)
    assert response.status_code in (200, 302), response.content[:500]
    assert door.done(world, response)
    if door.changes:
        assert fingerprint() != before


# Completeness ---------------------------------------------------------------------------

# Methods that, overridden, replace a check Django would otherwise make.
GUARDED_METHODS = [
    "changelist_view",
    "add_view",
    "change_view",
    "changeform_view",
    "_changeform_view",
    "delete_view",
    "history_view",
    "response_action",
    "get_actions",
    "_get_base_actions",
    "_filter_actions_by_permissions",
]


def registered_doors() -> set[str]:
    doors = set()
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label_lower
        for func, name, _ in model_admin._get_base_actions():
            if func is delete_selected:  # Django's own, checked by the delete permission
                assert list(func.allowed_permissions) == ["delete"]
                continue
            assert getattr(func, "allowed_permissions", None), f"{label}:{name} has none"
            doors.add(f"action:{label}:{name}")
        standard = {str(p.pattern) for p in admin.ModelAdmin.get_urls(model_admin)}
        for pattern in model_admin.get_urls():
            if str(pattern.pattern) not in standard:
                doors.add(f"url:{pattern.name or pattern.pattern}")
        for klass in type(model_admin).__mro__:
            if klass.__module__.split(".")[0] in ("django", "builtins"):
                continue
            for method in GUARDED_METHODS:
                if method in vars(klass):
                    doors.add(f"view:{label}:{method}")
    return doors


def test_every_admin_door_is_in_the_table():
    # The default site with only Django's site-wide action: no other views hide there.
    assert admin.site.__class__ is admin.AdminSite
    assert [name for name, _ in admin.site.actions] == ["delete_selected"]
    in_table = {door.id.split("#")[0] for door in DOORS}
    assert registered_doors() == in_table
    # Each onboarding step has its own row, with the permission the view checks.
    steps = {d.id.partition("#")[2]: d.needs for d in DOORS if d.id.startswith("url:telegram_onb")}
    assert steps == {"": ("telegram.view_bot",), **{s: (p,) for s, p in STEP_PERMISSIONS.items()}}


def test_an_unknown_onboarding_step_is_refused(client, world, outside):
    login_with(client, every_permission())
    before = fingerprint()
    url = reverse("admin:telegram_onboarding", args=[world["agent"].pk])
    assert client.post(url, {"step": "drop_tables"}).status_code == 400
    assert fingerprint() == before


# The admin index ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "perms, queue, workers",
    [
        (set(), False, False),
        ({"workers.view_message"}, True, False),
        ({"workers.view_worker"}, False, True),
        ({"workers.change_message", "workers.change_worker"}, True, True),
    ],
)
def test_dashboard_shows_only_what_the_user_may_view(client, world, perms, queue, workers):
    Message.objects.filter(pk=world["message"].pk).update(last_error="boom-secret-detail")
    login_with(client, perms)
    html = client.get("/admin/").content.decode()
    assert ("dead letters" in html) is queue
    assert ("boom-secret-detail" in html) is queue
    assert ('id="dashboard-workers"' in html) is workers
    assert ("queue-dashboard" in html) is (queue or workers)
