"""Event webhook settings and deliveries in the admin and by command (SPEC §15): a first URL
makes a secret shown once, rotating asks first, bad URLs are refused and change nothing,
deliveries are listed read-only with filters, failed ones can be sent again (with the
permission), and no secret appears on any page."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents.consumer_api.event_models import EventDelivery
from agents.consumer_api.models import ApiKey
from agents.models import AuditEvent
from agents.secret_refs import api_key_webhook_secret_ref
from agents.secret_store import get_active_secret_value
from tests.consumer_api.webhook_receiver import Receiver

pytestmark = pytest.mark.django_db


def secret_of(api_key: ApiKey) -> str | None:
    return get_active_secret_value(api_key_webhook_secret_ref(api_key.prefix))


def key_form(row: ApiKey, **changes) -> dict:
    return {
        "name": row.name,
        "tenant": row.tenant_id,
        "mode": row.mode,
        "webhook_url": row.webhook_url,
        **changes,
    }


def shown_secret(response) -> str:
    messages = [str(m) for m in response.context["messages"]]
    return next(
        m.split("secret of ")[1].split(" is: ")[1].split(" .")[0]
        for m in messages
        if "signing secret" in m
    )


def test_a_first_webhook_url_in_the_admin_makes_a_secret_shown_once(world, make_key, admin_client):
    row = make_key().api_key
    assert secret_of(row) is None
    url = f"/admin/consumer_api/apikey/{row.pk}/change/"
    response = admin_client.post(
        url, key_form(row, webhook_url="https://host.example/hooks"), follow=True
    )
    assert response.status_code == 200
    secret = shown_secret(response)
    row.refresh_from_db()
    assert row.webhook_url == "https://host.example/hooks" and secret_of(row) == secret
    # Saved again with the same URL: the secret stays, and is not shown again.
    again = admin_client.post(url, key_form(row, name="renamed"), follow=True)
    assert "signing secret of" not in again.content.decode() and secret_of(row) == secret
    for page in ("/admin/consumer_api/apikey/", url, "/admin/agents/auditevent/"):
        assert secret not in admin_client.get(page).content.decode()


@pytest.mark.parametrize(
    "bad",
    ["http://host.example/hooks", "ftp://host.example/x", "https://user:pw@host.example/x"],
)
def test_the_admin_refuses_a_webhook_url_we_will_not_post_to(world, make_key, admin_client, bad):
    row = make_key().api_key
    response = admin_client.post(
        f"/admin/consumer_api/apikey/{row.pk}/change/", key_form(row, webhook_url=bad)
    )
    assert response.status_code == 200 and "errorlist" in response.content.decode()
    row.refresh_from_db()
    assert row.webhook_url == "" and secret_of(row) is None


def test_rotating_the_webhook_secret_asks_first_then_shows_the_new_one(
    world, make_key, admin_client
):
    created = make_key(webhook_url="https://host.example/hooks")
    row = created.api_key
    changelist = "/admin/consumer_api/apikey/"
    body = {"action": "rotate_webhook_secret", "_selected_action": [row.pk]}
    page = admin_client.post(changelist, body)
    assert page.status_code == 200 and 'name="confirm" value="yes"' in page.content.decode()
    assert secret_of(row) == created.webhook_secret  # nothing changed yet
    done = admin_client.post(changelist, {**body, "confirm": "yes"}, follow=True)
    new = shown_secret(done)
    assert new != created.webhook_secret and secret_of(row) == new
    assert AuditEvent.objects.filter(action="consumer_api.set_webhook").exists()


def test_set_api_key_webhook_command(world, make_key, capsys):
    row = make_key().api_key
    call_command("set_api_key_webhook", row.prefix, "--url", "https://host.example/h", "--json")
    out = json.loads(capsys.readouterr().out)
    assert out["webhook_url"] == "https://host.example/h"
    assert secret_of(row) == out["webhook_secret"]
    call_command("set_api_key_webhook", row.prefix, "--url", "https://host.example/2", "--json")
    assert "webhook_secret" not in json.loads(capsys.readouterr().out)  # kept, not shown
    call_command(
        "set_api_key_webhook", row.prefix, "--url", "https://host.example/2", "--rotate-secret"
    )
    text = capsys.readouterr().out
    assert secret_of(row) in text and "not shown again" in text
    call_command("set_api_key_webhook", row.prefix, "--url", "")
    row.refresh_from_db()
    assert row.webhook_url == "" and "off" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope", "--url", "https://h.example/"], "API key 'nope' not found."),
        (["{prefix}", "--url", "http://h.example/"], "must start with https://"),
    ],
)
def test_set_api_key_webhook_refuses_bad_input(world, make_key, args, message):
    row = make_key().api_key
    with pytest.raises(CommandError, match=message):
        call_command("set_api_key_webhook", *[a.format(prefix=row.prefix) for a in args])
    row.refresh_from_db()
    assert row.webhook_url == "" and secret_of(row) is None


def test_create_api_key_accepts_http_only_to_loopback(world, make_key, settings):
    from agents.consumer_api.services import ApiKeyError

    assert make_key(webhook_url="http://127.0.0.1:9/h").webhook_secret
    with pytest.raises(ApiKeyError, match="https://"):
        make_key(webhook_url="http://10.0.0.1/h")
    settings.CONSUMER_API_WEBHOOK_ALLOW_HTTP_LOOPBACK = False  # production without DEBUG
    with pytest.raises(ApiKeyError, match="https://"):
        make_key(webhook_url="http://127.0.0.1:9/h")


def failed_delivery(api_key: ApiKey, n: int = 1) -> EventDelivery:
    return EventDelivery.objects.create(
        api_key=api_key,
        event_id=f"evt_{n}",
        event_type="binding.revoked",
        agent_key="alpha",
        body=json.dumps({"id": f"evt_{n}", "type": "binding.revoked"}),
        status=EventDelivery.FAILED,
        attempts=30,
        last_error="gave up after 30 attempts: HTTP 500",
        give_up_at=timezone.now(),
    )


def test_deliveries_are_listed_read_only_and_failed_ones_sent_again(
    world, make_key, admin_client, django_capture_on_commit_callbacks
):
    receiver = Receiver()
    try:
        created = make_key(webhook_url=receiver.url)
        row = failed_delivery(created.api_key)
        changelist = "/admin/consumer_api/eventdelivery/"
        listing = admin_client.get(
            changelist, {"status": "failed", "event_type": "binding.revoked"}
        )
        content = listing.content.decode()
        assert "evt_1" in content and "gave up after 30 attempts" in content
        assert created.webhook_secret not in content
        detail = admin_client.get(f"{changelist}{row.pk}/change/").content.decode()
        assert created.webhook_secret not in detail and 'name="_save"' not in detail
        with django_capture_on_commit_callbacks(execute=True):
            admin_client.post(
                changelist, {"action": "retry_selected_events", "_selected_action": [row.pk]}
            )
        row.refresh_from_db()
        assert row.status == "delivered" and row.attempts == 1
        assert receiver.events(created.webhook_secret)[0]["id"] == "evt_1"
        assert AuditEvent.objects.filter(action="consumer_api.event_retry").exists()
    finally:
        receiver.close()


def test_retrying_needs_the_change_permission(world, make_key, client):
    row = failed_delivery(make_key(webhook_url="https://host.example/h").api_key)
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_eventdelivery"))
    client.force_login(viewer)
    changelist = "/admin/consumer_api/eventdelivery/"
    assert "retry_selected_events" not in client.get(changelist).content.decode()
    client.post(changelist, {"action": "retry_selected_events", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.status == "failed"
