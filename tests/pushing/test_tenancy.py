"""Pushing keyed by tenant (SPEC §15): two tenants' users with the same consumer id are two
people — a push, a broadcast, a template send or a stat of one never touches the other."""

from __future__ import annotations

import pytest

from agents.models import AgentProfile, Tenant
from agents.pushing.dispatch import dispatch_push_jobs, drain_pending
from agents.pushing.models import (
    MessageTemplate,
    PushBroadcastDispatch,
    PushDispatch,
    PushTemplate,
)
from agents.pushing.services import PushError, push_stats, send_broadcast, trigger_push_job
from agents.pushing.template_services import (
    TemplateError,
    render_template,
    save_message_template,
    save_push_template,
    send_message_template,
)
from tests.pushing.conftest import utc
from workers.models import Message

pytestmark = pytest.mark.django_db

SAME_USER = "u1"


@pytest.fixture
def two_tenants(bind):
    """``default``: agent alpha; ``acme``: agent gamma; each has a user ``u1``."""
    acme = Tenant.objects.create(slug="acme")
    alpha = AgentProfile.objects.create(agent_key="alpha")
    gamma = AgentProfile.objects.create(agent_key="gamma", tenant=acme)
    bind(SAME_USER, alpha, chat="111")
    bind(SAME_USER, gamma, chat="222")
    return alpha, gamma


def chats_reached():
    return sorted(m.payload["metadata"]["telegram_chat_id"] for m in Message.objects.all())


def test_a_scheduled_push_reaches_only_its_tenants_user(two_tenants, make_job):
    alpha, gamma = two_tenants
    make_job(SAME_USER, tenant="acme")
    dispatch_push_jobs(utc("2026-01-01T08:00:30Z"))
    assert chats_reached() == ["222"]
    row = PushDispatch.objects.get()
    assert (row.tenant.slug, row.agent_id) == ("acme", gamma.pk)
    # The other tenant's job reaches the other user, whatever the order of the bindings.
    make_job(SAME_USER, now="2026-01-02T07:00Z")
    dispatch_push_jobs(utc("2026-01-02T08:00:30Z"))
    assert chats_reached() == ["111", "222", "222"]


def test_a_job_names_an_agent_of_its_own_tenant(two_tenants, make_job):
    with pytest.raises(PushError, match="Agent 'alpha' does not exist in tenant 'acme'"):
        make_job(SAME_USER, tenant="acme", agent_key="alpha")


def test_trigger_now_follows_the_jobs_tenant(two_tenants, make_job):
    job = make_job(SAME_USER, tenant="acme")
    trigger_push_job(job, actor="t", now=utc("2026-01-01T09:00Z"))
    drain_pending()
    assert chats_reached() == ["222"]


def test_a_broadcast_of_one_tenant_never_reaches_the_other(two_tenants):
    broadcast = send_broadcast("news", actor="t", tenant="acme")
    drain_pending()
    assert broadcast.agent_keys == ["gamma"] and broadcast.tenant.slug == "acme"
    assert chats_reached() == ["222"]
    assert list(PushBroadcastDispatch.objects.values_list("tenant__slug", flat=True)) == ["acme"]
    with pytest.raises(PushError, match="Agent 'alpha' does not exist in tenant 'acme'"):
        send_broadcast("news", actor="t", tenant="acme", agent_keys=["alpha"])


def test_an_operator_broadcast_over_every_tenant_keys_each_target(two_tenants):
    broadcast = send_broadcast("news", actor="t")
    assert broadcast.tenant is None
    rows = PushBroadcastDispatch.objects.order_by("tenant__slug")
    assert [(r.tenant.slug, r.telegram_chat_id) for r in rows] == [
        ("acme", "222"),
        ("default", "111"),
    ]


def test_template_keys_and_slugs_are_per_tenant(two_tenants):
    for tenant in ("default", "acme"):
        save_push_template(
            actor="t", key="digest", title="D", text="x", periodicity="manual", tenant=tenant
        )
        save_message_template(actor="t", title="Welcome", text="Hi", tenant=tenant)
    assert PushTemplate.objects.filter(key="digest").count() == 2
    assert MessageTemplate.objects.filter(slug="welcome").count() == 2
    with pytest.raises(TemplateError, match="already exists in tenant 'acme'") as error:
        save_push_template(
            actor="t", key="digest", title="D", text="x", periodicity="manual", tenant="acme"
        )
    assert error.value.field == "key"
    again = save_message_template(actor="t", title="Welcome", text="Hi", tenant="acme")
    assert again.slug == "welcome-2"


def test_a_template_agent_is_of_the_templates_tenant(two_tenants):
    with pytest.raises(TemplateError, match="Agent 'alpha' does not exist in tenant 'acme'"):
        save_message_template(actor="t", title="W", text="Hi", tenant="acme", agent_key="alpha")
    assert not MessageTemplate.objects.exists()


def test_a_message_template_goes_to_its_tenants_user_with_variables(two_tenants):
    save_message_template(actor="t", title="Welcome", text="Hi {{ name }}!", tenant="acme")
    sent = send_message_template(
        "welcome", SAME_USER, actor="t", tenant="acme", variables={"name": "Ada"}
    )
    message = Message.objects.get()
    assert message.payload["message_text"] == "Hi Ada!"
    assert message.payload["metadata"]["telegram_chat_id"] == "222"
    assert sent["usage_count"] == 1 and sent["conversation_id"] == "user-agent:gamma:u1"
    # The default tenant has no such template: its user u1 gets nothing.
    with pytest.raises(TemplateError, match="not found"):
        send_message_template("welcome", SAME_USER, actor="t", variables={"name": "Ada"})
    assert Message.objects.count() == 1


def test_a_template_bound_to_an_agent_is_not_sent_to_another_agent(two_tenants, bind):
    alpha, _ = two_tenants
    beta = AgentProfile.objects.create(agent_key="beta")
    bind("u2", beta, chat="333")
    save_message_template(actor="t", title="Alpha only", text="Hi", agent_key="alpha")
    with pytest.raises(TemplateError, match="not found"):
        send_message_template("alpha-only", "u2", actor="t")
    send_message_template("alpha-only", SAME_USER, actor="t")
    assert chats_reached() == ["111"]


@pytest.mark.parametrize(
    "variables, message",
    [
        ({}, "Missing variable(s): name, day."),
        ({"name": "A", "day": "Mon", "nmae": "x"}, "Unknown variable(s): nmae (the template"),
        ({"name": "A", "day": 3}, "must be strings"),
        ({"name": "A", "day": "x" * 1001}, "must be strings of at most 1000"),
    ],
)
def test_template_variables_are_checked(variables, message):
    with pytest.raises(TemplateError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render_template("Hi {{name}}, see you {{ day }} ({{name}})", variables)


def test_render_fills_every_use_and_leaves_other_braces():
    text = "Hi {{name}} {{ name }} {name} {{ not a var }}"
    assert render_template(text, {"name": "Ada"}) == "Hi Ada Ada {name} {{ not a var }}"


def test_a_refused_send_changes_nothing(two_tenants):
    template = save_message_template(actor="t", title="W", text="Hi {{name}}", tenant="acme")
    with pytest.raises(TemplateError):
        send_message_template("w", SAME_USER, actor="t", tenant="acme")
    template.refresh_from_db()
    assert template.usage_count == 0 and not Message.objects.exists()


def test_push_stats_are_per_tenant(two_tenants, make_job):
    make_job(SAME_USER, tenant="acme")
    dispatch_push_jobs(utc("2026-01-01T08:00:30Z"))
    assert push_stats(SAME_USER, "gamma", "acme")["total_dispatches"] == 1
    assert push_stats(SAME_USER, tenant="acme")["total_push_jobs"] == 1
    assert push_stats(SAME_USER)["total_push_jobs"] == 0
    assert push_stats(SAME_USER)["total_dispatches"] == 0


def test_the_message_templates_command_takes_a_tenant_and_variables(two_tenants):
    import json
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    def run(*args):
        out = StringIO()
        call_command("message_templates", *args, "--json", stdout=out)
        return json.loads(out.getvalue())

    made = run("create", "--title", "Hi", "--text", "Hi {{name}}", "--tenant", "acme")
    assert made["variables"] == ["name"]
    assert run("list")["results"] == []  # the default tenant's
    sent = run("send", "hi", "--user", SAME_USER, "--tenant", "acme", "--var", "name=Ada")
    assert sent["usage_count"] == 1 and chats_reached() == ["222"]
    assert Message.objects.get().payload["message_text"] == "Hi Ada"
    with pytest.raises(CommandError, match="Missing variable"):
        call_command("message_templates", "send", "hi", "--user", SAME_USER, "--tenant", "acme")
    with pytest.raises(CommandError, match="--var needs NAME=VALUE"):
        call_command(
            "message_templates",
            "send",
            "hi",
            "--user",
            SAME_USER,
            "--tenant",
            "acme",
            "--var",
            "name",
        )
    with pytest.raises(CommandError, match="Tenant 'nope' does not exist"):
        call_command("message_templates", "list", "--tenant", "nope")


def test_admin_template_forms_key_by_tenant(admin_client, two_tenants):
    url = "/admin/pushing/messagetemplate/add/"
    form = {"title": "Welcome", "text": "Hi", "tags": "[]", "enabled": "on", "agent": ""}
    assert admin_client.post(url, form).status_code == 302
    assert MessageTemplate.objects.get().tenant.slug == "default"  # empty: default
    _, gamma = two_tenants
    response = admin_client.post(url, {**form, "agent": gamma.pk})
    assert response.status_code == 302  # empty: the agent's tenant
    assert MessageTemplate.objects.get(agent=gamma).tenant.slug == "acme"
    default = Tenant.objects.get(slug="default").pk
    response = admin_client.post(url, {**form, "agent": gamma.pk, "tenant": default})
    assert response.status_code == 200 and b"belongs to tenant" in response.content
    assert MessageTemplate.objects.count() == 2


def test_create_push_job_takes_the_agents_tenant_or_the_one_given(two_tenants):
    import json
    from io import StringIO

    from django.core.management import call_command

    from agents.pushing.models import PushJob

    def run(*args):
        out = StringIO()
        args = ("--periodicity", "manual", "--text", "x", "--json", *args)
        call_command("create_push_job", *args, stdout=out)
        return json.loads(out.getvalue())

    by_agent = run("--user", SAME_USER, "--agent", "gamma")
    given = run("--user", SAME_USER, "--tenant", "acme")
    neither = run("--user", SAME_USER)
    tenants = dict(PushJob.objects.values_list("pk", "tenant__slug"))
    assert [tenants[j["id"]] for j in (by_agent, given, neither)] == ["acme", "acme", "default"]
