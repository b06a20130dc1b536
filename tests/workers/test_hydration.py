"""Hydration bundle (SPEC §8): lease holder only, key resolution order, history window."""

from __future__ import annotations

import datetime as dt
import json
import logging
from urllib.parse import urlsplit

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from agents.models import AuditEvent, Conversation, ConversationEntry
from agents.secret_store import import_secret
from workers.models import MessageAttachment

API = "/api/v1/worker"
BOT_TOKEN = "777:PLAINTEXT-BOT-TOKEN"
SERVICE_KEY = "svc-PLAINTEXT-SERVICE-KEY"
MODEL_KEY = "sk-PLAINTEXT-MODEL-KEY-77"


@pytest.fixture
def holder(alpha_agent, claim_as, enqueue):
    message = enqueue("conv-h", "alpha", "hello")
    worker, api, job = claim_as("w-holder")
    return message, worker, api, job


def bundle(api, job):
    response = api.get(f"{API}/jobs/{job['message_id']}/hydration/", {"lease_id": job["lease_id"]})
    assert response.status_code == 200, response.content
    return response.json()


def enable_bridge(agent, **extra):
    agent.bridge_config = {
        "enabled": True,
        "base_url": "https://bridge.test",
        "service_id": "svc-1",
        "app_key": "app-1",
        **extra,
    }
    agent.save()


def test_bundle_fields_and_disabled_bridge_is_null(holder):
    message, worker, api, job = holder
    body = bundle(api, job)
    assert body["message_id"] == message.pk
    assert body["conversation_id"] == "conv-h"
    assert body["agent_key"] == "alpha"
    assert body["payload"]["message_text"].endswith("hello")
    assert body["telegram_bot_token"] is None and body["bot_identity"] is None
    assert body["bridge"] is None
    assert body["conversation"]["pending_tool_calls"] is not None


def test_bot_token_and_identity_come_from_the_secret_store(holder, alpha_agent):
    """The token only for an agent whose worker sends its replies itself (SPEC §8, §22)."""
    _, _, api, job = holder
    import_secret("telegram.botToken.alpha", BOT_TOKEN, actor="t", metadata={"bot_identity": "777"})
    body = bundle(api, job)
    assert body["telegram_bot_token"] is None and BOT_TOKEN not in json.dumps(body)
    assert body["bot_identity"] == "777"
    alpha_agent.delivery = "worker"
    alpha_agent.save()
    body = bundle(api, job)
    assert body["telegram_bot_token"] == BOT_TOKEN
    assert body["bot_identity"] == "777"


@pytest.mark.parametrize(
    "stored, expected_ref",
    [
        (["custom.ref", "agent-bridge.serviceKey.alpha", "agent-bridge.serviceKey"], "custom.ref"),
        (
            ["agent-bridge.serviceKey.alpha", "agent-bridge.serviceKey"],
            "agent-bridge.serviceKey.alpha",
        ),
        (["agent-bridge.serviceKey"], "agent-bridge.serviceKey"),
    ],
)
def test_service_key_resolution_order(holder, alpha_agent, stored, expected_ref):
    _, _, api, job = holder
    enable_bridge(alpha_agent, service_key_secret_ref="custom.ref")
    for ref in stored:
        import_secret(ref, f"value-of-{ref}", actor="t")
    bridge = bundle(api, job)["bridge"]
    assert bridge["service_key_secret_ref"] == expected_ref
    assert bridge["service_key"] == f"value-of-{expected_ref}"
    assert bridge["base_url"] == "https://bridge.test"
    assert (bridge["service_id"], bridge["app_key"]) == ("svc-1", "app-1")


def test_missing_service_key_is_null_not_an_error(holder, alpha_agent):
    _, _, api, job = holder
    enable_bridge(alpha_agent)
    bridge = bundle(api, job)["bridge"]
    assert bridge["service_key"] is None and bridge["service_key_secret_ref"] is None


def test_history_is_the_last_64_entries_in_order(holder):
    _, _, api, job = holder
    conversation = Conversation.objects.get(conversation_id="conv-h")
    start = timezone.now() - dt.timedelta(hours=1)
    ConversationEntry.objects.bulk_create(
        ConversationEntry(
            conversation=conversation,
            role="user",
            content=f"m{n}",
            at=start + dt.timedelta(seconds=n),
        )
        for n in range(100)
    )
    history = bundle(api, job)["conversation"]["history"]
    assert [e["content"] for e in history] == [f"m{n}" for n in range(36, 100)]


def test_attachment_download_only_for_the_conversations_worker(
    holder, make_worker, worker_api, enqueue
):
    message, _, api, job = holder
    attachment = MessageAttachment.objects.create(
        message=message, kind="document", status="ready", file_name="a.txt", mime_type="text/plain"
    )
    attachment.file.save("a.txt", ContentFile(b"attached bytes"))
    body = bundle(api, job)
    url = body["payload"]["attachments"][0]["download_url"]
    path = urlsplit(url).path
    assert path == f"{API}/attachments/{attachment.pk}/download/"
    response = api.get(path)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"attached bytes"
    _, other = make_worker("w-other", heartbeat_at=timezone.now())
    denied = worker_api(other).get(path)
    assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
    assert worker_api(None).get(path).status_code == 401
    missing = api.get(f"{API}/attachments/999999/download/")
    assert missing.status_code == 404
    # A ready row whose file is gone: 404 with the §19 body.
    MessageAttachment.objects.filter(pk=attachment.pk).update(file="")
    assert api.get(path).json() == {
        "error": "not_found",
        "detail": "The attachment file is not stored.",
    }


def test_plaintext_secrets_reach_only_the_lease_holders_bundle(
    holder, alpha_agent, make_worker, worker_api, admin_client, caplog
):
    """Every other answer, admin page, audit row and log line is free of the plaintext."""
    caplog.set_level(logging.DEBUG)
    message, worker, api, job = holder
    import_secret("telegram.botToken.alpha", BOT_TOKEN, actor="t", metadata={"bot_identity": "7"})
    import_secret("agent-bridge.serviceKey", SERVICE_KEY, actor="t")
    enable_bridge(alpha_agent)
    # The model key too (SPEC §21): stored through the store, named by the profile.
    import_secret("alpha.modelKey", MODEL_KEY, actor="t")
    alpha_agent.handler, alpha_agent.model = "llm", "gpt-4o-mini"
    alpha_agent.api_key_secret_ref = "alpha.modelKey"
    alpha_agent.delivery = "worker"  # the one mode in which the bot token leaves the server
    alpha_agent.save()
    secrets_ = (BOT_TOKEN.encode(), SERVICE_KEY.encode(), MODEL_KEY.encode())

    good = api.get(f"{API}/jobs/{job['message_id']}/hydration/", {"lease_id": job["lease_id"]})
    assert all(s in good.content for s in secrets_)

    _, intruder_token = make_worker("w-intruder", heartbeat_at=timezone.now())
    intruder = worker_api(intruder_token)
    hydration = f"{API}/jobs/{job['message_id']}/hydration/"
    others = [
        intruder.get(hydration, {"lease_id": job["lease_id"]}),
        worker_api(None).get(hydration, {"lease_id": job["lease_id"]}),
        api.get(hydration, {"lease_id": "not-the-lease"}),
        api.get(hydration),
        intruder.post(f"{API}/claim/", {}, format="json"),
        api.post(f"{API}/control/", {}, format="json"),
        api.post(
            f"{API}/jobs/{job['message_id']}/heartbeat/",
            {"lease_id": job["lease_id"]},
            format="json",
        ),
        api.post(f"{API}/claim/", {}, format="json"),
        api.post(
            f"{API}/jobs/{job['message_id']}/delivered/",
            {"lease_id": job["lease_id"]},
            format="json",
        ),
        api.post(
            f"{API}/conversations/conv-h/messages/",
            {
                "lease_id": job["lease_id"],
                "message_id": job["message_id"],
                "messages": [{"role": "assistant", "content": "ok"}],
            },
            format="json",
        ),
        api.get(f"{API}/snapshots/latest/", {"workspace_id": "default"}),
        admin_client.get("/api/schema/"),
        admin_client.get("/admin/workers/message/"),
        admin_client.get(f"/admin/workers/message/{message.pk}/change/"),
        admin_client.get("/admin/workers/worker/"),
        admin_client.get("/admin/"),
        admin_client.get("/admin/agents/agentprofile/"),
        admin_client.get(f"/admin/agents/agentprofile/{alpha_agent.pk}/change/"),
        admin_client.get("/admin/agents/secret/"),
    ]
    assert [r.status_code for r in others[:4]] == [409, 401, 409, 400]
    for response in others:
        assert all(s not in response.content for s in secrets_), response
    # After the lease is gone, the former holder gets nothing either.
    api.post(
        f"{API}/jobs/{job['message_id']}/complete/", {"lease_id": job["lease_id"]}, format="json"
    )
    late = api.get(hydration, {"lease_id": job["lease_id"]})
    assert late.status_code == 409
    assert all(s not in late.content for s in secrets_)
    for details in AuditEvent.objects.values_list("details", flat=True):
        assert all(s.decode() not in str(details) for s in secrets_)
    assert all(s.decode() not in caplog.text for s in secrets_)


def test_bridge_matches_the_reference_expectation(holder, alpha_agent):
    """reference/queue.md §5.2: plain profile values, per-agent secrets for key and URL map."""
    _, _, api, job = holder
    enable_bridge(
        alpha_agent,
        base_url="https://consumer.example.com",
        service_id="openclaw-prod",
        app_key="crm",
    )
    url_map = '{"crm": "https://crm.example.com"}'
    import_secret("agent-bridge.serviceKey.alpha", "abs_live_bridge_key", actor="t")
    import_secret("agent-bridge.baseUrlMapJson.alpha", url_map, actor="t")
    import_secret("agent-bridge.baseUrlMapJson", '{"crm": "global"}', actor="t")
    assert bundle(api, job)["bridge"] == {
        "base_url": "https://consumer.example.com",
        "app_base_url_map_json": url_map,
        "service_id": "openclaw-prod",
        "app_key": "crm",
        "service_key": "abs_live_bridge_key",
        "service_key_secret_ref": "agent-bridge.serviceKey.alpha",
        "bot_identity": None,
    }


def test_bridge_url_map_override_then_global_and_values_from_secrets(holder, alpha_agent):
    _, _, api, job = holder
    alpha_agent.bridge_config = {
        "enabled": True,
        "base_url": "https://bridge.test",
        "app_base_url_map_json_secret_ref": "custom.map",
    }
    alpha_agent.save()
    import_secret("agent-bridge.baseUrlMapJson", '{"g": 1}', actor="t")
    import_secret("agent-bridge.serviceId", "global-service", actor="t")
    import_secret("agent-bridge.appKey.alpha", "agent-app", actor="t")
    bridge = bundle(api, job)["bridge"]
    # The override has no active secret: the lookup falls through to the global ref.
    assert bridge["app_base_url_map_json"] == '{"g": 1}'
    assert bridge["service_id"] == "global-service"
    assert bridge["app_key"] == "agent-app"
    import_secret("custom.map", '{"o": 1}', actor="t")
    assert bundle(api, job)["bridge"]["app_base_url_map_json"] == '{"o": 1}'


def test_bridge_carries_the_bots_identity(holder, alpha_agent):
    _, _, api, job = holder
    enable_bridge(alpha_agent)
    import_secret("telegram.botToken.alpha", BOT_TOKEN, actor="t", metadata={"bot_identity": "777"})
    assert bundle(api, job)["bridge"]["bot_identity"] == "777"


def test_expired_or_foreign_lease_gets_no_bundle(holder, make_worker, worker_api):
    import time_machine

    message, _, api, job = holder
    import_secret("telegram.botToken.alpha", BOT_TOKEN, actor="t")
    path = f"{API}/jobs/{job['message_id']}/hydration/"
    expires = dt.datetime.fromisoformat(job["lease_expires_at"])
    with time_machine.travel(expires, tick=False):
        late = api.get(path, {"lease_id": job["lease_id"]})
    assert late.status_code == 409 and BOT_TOKEN.encode() not in late.content
    with time_machine.travel(expires - dt.timedelta(seconds=1), tick=False):
        assert api.get(path, {"lease_id": job["lease_id"]}).status_code == 200
    _, other = make_worker("w-other-2", heartbeat_at=timezone.now())
    foreign = worker_api(other).get(path, {"lease_id": job["lease_id"]})
    assert foreign.status_code == 409 and BOT_TOKEN.encode() not in foreign.content


@pytest.mark.parametrize("lost", ["telegram.botToken.alpha", "agent-bridge.serviceKey.alpha"])
def test_hydration_with_an_undecryptable_secret_is_503_secret_unavailable(
    holder, alpha_agent, lost, caplog
):
    """SPEC §23: never a 500; the operator's log names the secret, the worker is not told."""
    from agents.models import Secret

    _, _, api, job = holder
    import_secret("telegram.botToken.alpha", BOT_TOKEN, actor="t", metadata={"bot_identity": "7"})
    import_secret("agent-bridge.serviceKey.alpha", SERVICE_KEY, actor="t")
    enable_bridge(alpha_agent)
    alpha_agent.delivery = "worker"  # else the bot token is not read at all
    alpha_agent.save()
    Secret.objects.filter(secret_ref=lost).update(key_id="deadbeef")
    response = api.get(f"{API}/jobs/{job['message_id']}/hydration/", {"lease_id": job["lease_id"]})
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "secret_unavailable" and "cannot be decrypted" in body["detail"]
    assert lost not in body["detail"] and BOT_TOKEN not in response.content.decode()
    assert any(lost in r.getMessage() and r.exc_info is None for r in caplog.records)


def test_runtime_section_carries_the_agents_settings_and_key(holder, alpha_agent, runtime_config):
    """SPEC §8/§21: the handler's settings and the model key, for the lease holder."""
    message, worker, api, job = holder
    runtime_config.system_prompt = "Global prompt."
    runtime_config.save()
    assert bundle(api, job)["runtime"] == {
        "handler": "echo",
        "model": "",
        "base_url": "",
        "api_key": None,
        "temperature": None,
        "max_tokens": None,
        "timeout_seconds": 120,
        "system_prompt": "Global prompt.",  # the runtime config's, when the agent has none
    }
    import_secret("alpha.modelKey", MODEL_KEY, actor="t")
    fields = {
        "handler": "llm",
        "model": "openai/gpt-4o-mini",
        "base_url": "https://openrouter.ai/api/v1",
        "api_key_secret_ref": "alpha.modelKey",
        "temperature": 0.7,
        "max_tokens": 300,
        "timeout_seconds": 30,
        "system_prompt": "Agent prompt.",
    }
    for name, value in fields.items():
        setattr(alpha_agent, name, value)
    alpha_agent.save()
    runtime = bundle(api, job)["runtime"]
    assert runtime == {
        **{k: v for k, v in fields.items() if k != "api_key_secret_ref"},
        "api_key": MODEL_KEY,
    }
    # The user's text is as sent: the prompt is in the runtime, not in the message.
    assert bundle(api, job)["payload"]["message_text"] == "hello"
