"""LOG_FORMAT=json: one JSON object per line, carrying the request id and, where known, the
agent, conversation, message and worker ids (SPEC §24); never a bot token."""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from agents import log_context
from config.logging_filters import base_logging
from ops.middleware import RequestIdMiddleware

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def json_lines(capsys):
    """The project's JSON logging (its console handler writes to the current stderr, which
    pytest captures); yields a reader of the parsed lines. Every line must parse."""
    logging.config.dictConfig(base_logging("INFO", "json"))
    yield lambda: [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


def test_each_line_is_an_object_with_the_bound_ids(json_lines):
    logger = logging.getLogger("tests.ops")
    with log_context.scope(request_id="r-1"):
        log_context.bind(agent_key="alpha", conversation_id="c-1", message_id=7, worker_id="w-1")
        logger.info("claimed\nwith a newline")
    logger.warning("outside", extra={"worker_id": "w-2"})
    first, second = json_lines()
    assert first["message"] == "claimed\nwith a newline"
    assert first["level"] == "INFO" and first["logger"] == "tests.ops"
    assert {k: first[k] for k in log_context.KEYS} == {
        "request_id": "r-1",
        "agent_key": "alpha",
        "conversation_id": "c-1",
        "message_id": "7",
        "worker_id": "w-1",
    }
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", first["time"])
    # The scope ended: nothing of it leaks into the next line; ``extra`` still counts.
    assert "request_id" not in second and second["worker_id"] == "w-2"


def test_tokens_are_redacted_in_messages_and_tracebacks(json_lines):
    logger = logging.getLogger("tests.ops")
    token = "123456:ABCdefGHIjklMNOpqr"
    try:
        raise RuntimeError(f"POST /bot{token}/sendMessage failed")
    except RuntimeError:
        logger.exception("calling /bot%s/getMe", token)
    (line,) = json_lines()
    assert token not in json.dumps(line)
    assert "bot<redacted>" in line["message"] and "bot<redacted>" in line["exception"]


def test_unknown_context_keys_are_refused():
    with pytest.raises(ValueError, match="Unknown log context keys"):
        log_context.bind(password="x")


def test_a_bad_log_format_is_refused():
    with pytest.raises(ValueError, match="plain or json"):
        base_logging("INFO", "xml")


@override_settings(LOG_FORMAT="json")
def test_requests_carry_their_id_into_every_line(json_lines, rf):
    def view(request):
        logging.getLogger("tests.view").info("inside the view")
        return __import__("django.http").http.HttpResponse("ok")

    middleware = RequestIdMiddleware(view)
    response = middleware(rf.get("/anything/", HTTP_X_REQUEST_ID="caller-id-1"))
    assert response["X-Request-ID"] == "caller-id-1"
    fresh = middleware(rf.get("/anything/", HTTP_X_REQUEST_ID="bad id\nInjected: yes"))
    assert re.fullmatch(r"[0-9a-f]{32}", fresh["X-Request-ID"])
    inside, access, inside2, access2 = json_lines()
    assert inside["request_id"] == access["request_id"] == "caller-id-1"
    assert access["logger"] == "ops.access" and access["message"].startswith("GET /anything/ 200")
    assert inside2["request_id"] == access2["request_id"] == fresh["X-Request-ID"]


def test_the_webhook_and_the_worker_api_name_their_ids(
    json_lines, client, db, settings, make_worker, worker_api
):
    """Through the whole stack: a webhook update names its agent, conversation and message;
    a worker's heartbeat names the worker and the message."""
    from agents.models import AgentProfile
    from agents.secret_store import import_secret
    from telegram.models import Bot

    settings.LOG_FORMAT = "json"
    agent = AgentProfile.objects.create(agent_key="alpha")
    Bot.objects.create(agent=agent, bot_identity="100", username="alpha_bot")
    import_secret("telegram.webhookSecret.alpha", "s" * 40, actor="t")
    update = {
        "update_id": 1,
        "message": {
            "message_id": 1,
            "from": {"id": 5, "is_bot": False, "first_name": "U"},
            "chat": {"id": 5, "type": "private"},
            "date": 0,
            "text": "hello",
        },
    }
    answer = client.post(
        "/telegram/webhook/100/",
        update,
        content_type="application/json",
        headers={"X-Telegram-Bot-Api-Secret-Token": "s" * 40},
    ).json()
    assert answer["status"] == "enqueued"
    _, token = make_worker("w-json")
    claimed = worker_api(token).post("/api/v1/worker/claim/", {}, format="json").json()["job"]
    worker_api(token).post(
        f"/api/v1/worker/jobs/{answer['message_id']}/heartbeat/",
        {"lease_id": "not-the-lease"},
        format="json",
    )
    webhook, claim, heartbeat = [line for line in json_lines() if line["logger"] == "ops.access"]
    assert claim["message"].startswith("POST /api/v1/worker/claim/ 200")
    assert claim["worker_id"] == "w-json" and claim["message_id"] == str(claimed["message_id"])
    assert claim["conversation_id"] == claimed["conversation_id"]
    assert claim["agent_key"] == "alpha"
    assert webhook["message"].startswith("POST /telegram/webhook/100/ 200")
    assert webhook["agent_key"] == "alpha"
    assert webhook["message_id"] == str(answer["message_id"])
    assert webhook["conversation_id"].startswith("telegram:")
    assert heartbeat["worker_id"] == "w-json"
    assert heartbeat["message_id"] == str(answer["message_id"])
    assert heartbeat["request_id"] != webhook["request_id"]


def test_the_server_starts_with_json_logs(tmp_path):
    """A real process: settings accept LOG_FORMAT=json and its log lines parse."""
    env = {
        "PATH": "/usr/bin:/bin",
        "LOG_FORMAT": "json",
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); import logging; "
            "logging.getLogger('x').warning('started')",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1]["message"] == "started" and lines[-1]["level"] == "WARNING"


def test_a_scope_starts_empty_and_restores_what_was_there():
    """A reused server thread may hold ids bound outside any scope: a request never
    inherits them (run in a copied context, so this test leaves its own thread clean)."""

    def reused_thread():
        log_context.bind(worker_id="stale")
        with log_context.scope(request_id="r-2"):
            assert log_context.current() == {"request_id": "r-2"}
        assert log_context.current() == {"worker_id": "stale"}

    contextvars.copy_context().run(reused_thread)
    assert "worker_id" not in log_context.current()
