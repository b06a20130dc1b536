"""Push templates, message templates (with variables) and user-agent stats through the
consumer API (SPEC §14, §15), and their tenant keying."""

from __future__ import annotations

import pytest

from agents.pushing.models import MessageTemplate, PushJob, PushTemplate
from agents.pushing.template_services import save_message_template, save_push_template
from tests.consumer_api.conftest import V1, bind
from workers.models import Message

pytestmark = pytest.mark.django_db

PUSH = {
    "key": "morning",
    "title": "Morning",
    "text": "Good morning",
    "periodicity": "daily",
    "suggested_times": [{"time": "07:30"}, {"time": "08:00"}],
}


# Push templates -------------------------------------------------------------------------


def test_push_template_create_read_patch_delete(world, rw):
    response = rw.post(V1 + "push-templates/", PUSH, format="json")
    assert response.status_code == 201, response.json()
    template = response.json()
    assert (template["key"], template["agent_key"]) == ("morning", None)
    assert template["suggested_times"] == PUSH["suggested_times"]
    url = f"{V1}push-templates/{template['id']}/"
    assert rw.get(url).json()["text"] == "Good morning"
    assert [t["id"] for t in rw.get(V1 + "push-templates/").json()["results"]] == [template["id"]]
    patched = rw.patch(url, {"text": "Buongiorno", "enabled": False}, format="json")
    assert patched.status_code == 200
    assert (patched.json()["text"], patched.json()["enabled"]) == ("Buongiorno", False)
    assert patched.json()["suggested_times"] == PUSH["suggested_times"]
    assert rw.get(V1 + "push-templates/?enabled=true").json()["results"] == []
    assert rw.delete(url).status_code == 204
    assert not PushTemplate.objects.exists()


def test_push_template_field_errors_change_nothing(world, rw):
    rw.post(V1 + "push-templates/", PUSH, format="json")
    duplicate = rw.post(V1 + "push-templates/", PUSH, format="json")
    assert duplicate.status_code == 400
    assert duplicate.json()["fields"] == {
        "key": ["Push template key 'morning' already exists in tenant 'default'."]
    }
    bad = rw.post(
        V1 + "push-templates/",
        {**PUSH, "key": "m2", "suggested_times": [{"time": "25:00"}]},
        format="json",
    )
    assert bad.status_code == 400
    assert "Suggested time 1: Invalid time" in bad.json()["fields"]["non_field_errors"][0]
    assert rw.post(V1 + "push-templates/", {**PUSH, "key": "no spaces"}, format="json").json()[
        "fields"
    ]["key"]
    assert PushTemplate.objects.count() == 1


def test_the_same_template_key_in_two_tenants(world, rw, make_key, api):
    acme = api(make_key(tenant="acme").key)
    ours = rw.post(V1 + "push-templates/", PUSH, format="json")
    theirs = acme.post(V1 + "push-templates/", PUSH, format="json")
    assert ours.status_code == theirs.status_code == 201
    assert [t["id"] for t in acme.get(V1 + "push-templates/").json()["results"]] == [
        theirs.json()["id"]
    ]
    assert acme.get(f"{V1}push-templates/{ours.json()['id']}/").status_code == 404
    assert PushTemplate.objects.filter(key="morning").count() == 2
    rw.post(V1 + "message-templates/", {"title": "Hi", "text": "x"}, format="json")
    assert acme.get(V1 + "message-templates/").json()["results"] == []
    assert acme.get(V1 + "message-templates/hi/").status_code == 404


def test_a_broadcast_through_the_api_reaches_only_the_keys_tenant(world, rw, make_key, api):
    from agents.pushing.dispatch import drain_pending

    acme = api(make_key(tenant="acme").key)
    bind(rw, user="u1", agent="alpha", tg="55")
    bind(acme, user="u1", agent="gamma", tg="66")
    response = acme.post(V1 + "broadcasts/", {"text": "news"}, format="json")
    assert response.status_code == 202 and response.json()["targets"] == 1
    drain_pending()
    assert [m.agent_key for m in Message.objects.all()] == ["gamma"]
    assert rw.get(f"{V1}broadcasts/{response.json()['broadcast_id']}/").status_code == 404


def test_a_push_job_from_a_template_of_the_tenant(world, rw, make_key, api):
    rw.post(V1 + "push-templates/", PUSH, format="json")
    job = {
        "consumer_user_id": "u1",
        "agent_key": "alpha",
        "template_key": "morning",
        "periodicity": "daily",
        "schedule": {"time": "07:30"},
    }
    response = rw.post(V1 + "push-jobs/", job, format="json")
    assert response.status_code == 201, response.json()
    assert (response.json()["text"], response.json()["template_key"]) == (
        "Good morning",
        "morning",
    )
    acme = api(make_key(tenant="acme").key)
    other = acme.post(V1 + "push-jobs/", {**job, "agent_key": "gamma"}, format="json")
    assert other.status_code == 400  # acme has no template "morning"
    assert other.json()["fields"] == {
        "template_key": ["Push template 'morning' does not exist in tenant 'acme'."]
    }
    assert PushJob.objects.count() == 1


@pytest.mark.parametrize("path", ["push-jobs", "push-templates"])
def test_a_patch_body_that_is_not_an_object_is_a_400(world, rw, path):
    if path == "push-jobs":
        body = {
            "consumer_user_id": "u1",
            "agent_key": "alpha",
            "text": "x",
            "periodicity": "manual",
        }
    else:
        body = PUSH
    created = rw.post(f"{V1}{path}/", body, format="json").json()
    response = rw.patch(f"{V1}{path}/{created['id']}/", [1, 2], format="json")
    assert response.status_code == 400
    assert response.json()["fields"] == {"non_field_errors": ["The body must be a JSON object."]}


# Message templates ----------------------------------------------------------------------


def test_message_template_create_read_patch_delete(world, rw):
    response = rw.post(
        V1 + "message-templates/",
        {"title": "Status Update", "text": "Hi {{name}}, {{ day }}?", "tags": [" Team ", "x"]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    template = response.json()
    assert template["slug"] == "status-update"
    assert template["variables"] == ["name", "day"]
    assert (template["tags"], template["usage_count"]) == (["team", "x"], 0)
    url = V1 + "message-templates/status-update/"
    assert rw.get(url).json()["title"] == "Status Update"
    renamed = rw.patch(url, {"title": "Weekly"}, format="json")
    assert renamed.json()["slug"] == "weekly" and renamed.json()["text"].startswith("Hi")
    assert rw.get(url).status_code == 404
    assert [t["slug"] for t in rw.get(V1 + "message-templates/?tag=team").json()["results"]] == [
        "weekly"
    ]
    assert rw.get(V1 + "message-templates/?tag=none").json()["results"] == []
    assert rw.delete(V1 + "message-templates/weekly/").status_code == 204
    assert not MessageTemplate.objects.exists()


def test_message_template_field_errors(world, rw):
    response = rw.post(V1 + "message-templates/", {"title": "  ", "text": "x"}, format="json")
    assert response.status_code == 400 and "title" in response.json()["fields"]
    assert not MessageTemplate.objects.exists()


def test_a_read_key_cannot_write_templates(world, make_key, api):
    client = api(make_key(read_only=True).key)
    assert client.post(V1 + "push-templates/", PUSH, format="json").status_code == 403
    response = client.post(V1 + "message-templates/", {"title": "a", "text": "b"}, format="json")
    assert response.status_code == 403
    assert not PushTemplate.objects.exists() and not MessageTemplate.objects.exists()


def test_a_narrowed_key_sees_the_tenants_templates_and_changes_only_its_agents(
    world, make_key, api
):
    save_message_template(actor="t", title="Shared", text="x")
    save_message_template(actor="t", title="Beta only", text="x", agent_key="beta")
    save_push_template(actor="t", key="shared", title="S", text="x", periodicity="manual")
    client = api(make_key(agents=["alpha"]).key)
    slugs = [t["slug"] for t in client.get(V1 + "message-templates/").json()["results"]]
    assert slugs == ["shared"]
    assert client.get(V1 + "message-templates/beta-only/").status_code == 404
    refused = client.patch(V1 + "message-templates/shared/", {"text": "y"}, format="json")
    assert refused.status_code == 403 and "narrowed" in refused.json()["detail"]
    assert client.delete(V1 + "message-templates/shared/").status_code == 403
    shared_push = PushTemplate.objects.get().pk
    assert client.delete(f"{V1}push-templates/{shared_push}/").status_code == 403
    unnamed = client.post(V1 + "message-templates/", {"title": "Mine", "text": "x"}, format="json")
    assert unnamed.status_code == 400 and "agent_key" in unnamed.json()["fields"]
    mine = client.post(
        V1 + "message-templates/",
        {"title": "Mine", "text": "x", "agent_key": "alpha"},
        format="json",
    )
    assert mine.status_code == 201 and mine.json()["agent_key"] == "alpha"
    foreign = client.post(
        V1 + "message-templates/",
        {"title": "Mine", "text": "x", "agent_key": "beta"},
        format="json",
    )
    assert foreign.status_code == 404
    assert (
        client.patch(V1 + "message-templates/mine/", {"text": "z"}, format="json").json()["text"]
        == "z"
    )
    assert MessageTemplate.objects.get(slug="shared").text == "x"


# Sending a template with variables ------------------------------------------------------


def send(client, body, user="u1", agent="alpha", **headers):
    return client.post(f"{V1}users/{user}/agents/{agent}/messages/", body, format="json", **headers)


def test_send_a_template_with_variables(world, rw):
    bind(rw)
    save_message_template(actor="t", title="Welcome", text="Hi {{name}}, day {{day}}.")
    body = {"template": "welcome", "variables": {"name": "Ada", "day": 3}}
    response = send(rw, body, HTTP_IDEMPOTENCY_KEY="s-1")
    assert response.status_code == 202, response.json()
    assert response.json()["conversation_id"] == "user-agent:alpha:u1"
    assert Message.objects.get().payload["message_text"] == "Hi Ada, day 3."
    assert send(rw, body, HTTP_IDEMPOTENCY_KEY="s-1").json() == response.json()
    assert MessageTemplate.objects.get().usage_count == 1  # the replay is not a new use


@pytest.mark.parametrize(
    "body, field, message",
    [
        (
            {"template": "welcome", "variables": {"name": "Ada"}},
            "variables",
            "Missing variable(s): day.",
        ),
        (
            {"template": "welcome", "variables": {"name": "A", "day": "1", "typo": "x"}},
            "variables",
            "Unknown variable(s): typo (the template uses: name, day).",
        ),
        ({"text": "hi", "variables": {"a": "b"}}, "variables", "Variables go with a 'template'"),
        ({"template": "nope"}, "template", "Message template 'nope' not found or disabled."),
    ],
)
def test_a_template_send_with_bad_variables_is_a_field_error(world, rw, body, field, message):
    bind(rw)
    save_message_template(actor="t", title="Welcome", text="Hi {{name}}, day {{day}}.")
    response = send(rw, body)
    assert response.status_code == 400
    assert message in response.json()["fields"][field][0]
    assert not Message.objects.exists()
    assert MessageTemplate.objects.get().usage_count == 0


def test_another_tenants_template_is_not_sent(world, rw):
    bind(rw)
    save_message_template(actor="t", title="Welcome", text="Hi", tenant="acme")
    assert send(rw, {"template": "welcome"}).status_code == 400
    assert not Message.objects.exists()


# Stats ----------------------------------------------------------------------------------


def test_user_agent_stats(world, rw, make_key, api):
    bind(rw)
    send(rw, {"text": "hi"})
    send(rw, {"text": "again"})
    Message.objects.filter(pk=Message.objects.order_by("pk").first().pk).update(status="failed")
    rw.post(
        V1 + "push-jobs/",
        {"consumer_user_id": "u1", "agent_key": "alpha", "text": "x", "periodicity": "manual"},
        format="json",
    )
    stats = rw.get(V1 + "users/u1/agents/alpha/stats/").json()
    assert stats["binding_status"] == "active"
    assert (stats["total_push_jobs"], stats["active_push_jobs"]) == (1, 1)
    assert (stats["queued_messages"], stats["failed_messages"], stats["done_messages"]) == (1, 1, 0)
    never = rw.get(V1 + "users/u1/agents/beta/stats/").json()
    assert (never["binding_status"], never["queued_messages"], never["total_dispatches"]) == (
        None,
        0,
        0,
    )
    # The other tenant's u1 is another person: nothing of the above.
    acme = api(make_key(tenant="acme").key)
    bind(acme, agent="gamma", tg="66")
    theirs = acme.get(V1 + "users/u1/agents/gamma/stats/").json()
    assert (theirs["total_push_jobs"], theirs["queued_messages"]) == (0, 0)
    assert acme.get(V1 + "users/u1/agents/alpha/stats/").status_code == 404
    assert acme.get(V1 + "push-jobs/?consumer_user_id=u1").json()["results"] == []
