"""Foundation commands: success paths and bad arguments (clear error, nothing written)."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from agents.models import AgentProfile, AuditEvent, RuntimeConfig, Secret
from agents.secret_store import get_active_secret_value


def run(*args, stdin=None, monkeypatch=None):
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue()


def test_import_secret_from_stdin(db, monkeypatch):
    out = run("import_secret", "openai.key", stdin="sk-abc\n", monkeypatch=monkeypatch)
    assert out.strip() == "Stored openai.key version 1."
    assert get_active_secret_value("openai.key") == "sk-abc"
    assert "sk-abc" not in out
    assert AuditEvent.objects.filter(actor="command:import_secret").exists()


@pytest.mark.parametrize(
    "ref, value, message",
    [
        ("openai.key", "", "empty value"),
        ("openai.key", "\n", "empty value"),
        ("bad ref!", "v", "Secret ref"),
    ],
)
def test_import_secret_refuses(db, monkeypatch, ref, value, message):
    with pytest.raises(CommandError, match=message):
        run("import_secret", ref, stdin=value, monkeypatch=monkeypatch)
    assert Secret.objects.count() == 0


def test_secret_status_json(db, monkeypatch):
    run("import_secret", "a.b", stdin="x1", monkeypatch=monkeypatch)
    run("import_secret", "a.b", stdin="x2", monkeypatch=monkeypatch)
    data = json.loads(run("secret_status", "--json"))
    [row] = data["secrets"]
    assert row["secret_ref"] == "a.b" and row["active_version"] == 2 and row["versions"] == 2
    assert "x2" not in json.dumps(data)


def test_configure_agent_create_update_and_audit(db):
    data = json.loads(
        run(
            "configure_agent",
            "sales-bot",
            "--secrets-ref",
            "openai.key",
            "--require-telegram-binding",
            "--json",
        )
    )
    assert data["created"] and data["version"] == 1
    assert data["secrets_ref"] == ["openai.key"] and data["require_telegram_binding"]
    data = json.loads(run("configure_agent", "sales-bot", "--disable", "--json"))
    assert not data["enabled"] and data["version"] == 2
    bridge = '{"enabled": true, "base_url": "https://app.example", "service_id": "svc"}'
    data = json.loads(run("configure_agent", "sales-bot", "--bridge-json", bridge, "--json"))
    assert data["bridge_config"]["service_id"] == "svc"
    assert AuditEvent.objects.filter(action__in=["agent.create", "agent.update"]).count() == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["Bad Key!"], "slug"),
        (["ok-key", "--bridge-json", "{not json"], "not valid JSON"),
        (["ok-key", "--bridge-json", "[1]"], "JSON object"),
        (["ok-key", "--bridge-json", '{"enabled": true}'], "base_url"),
        (["ok-key", "--bridge-json", '{"colour": "red"}'], "Unknown bridge config key"),
        (["ok-key", "--secrets-ref", "bad ref"], "Secret ref"),
    ],
)
def test_configure_agent_bad_input_writes_nothing(db, args, message):
    with pytest.raises(CommandError, match=message):
        run("configure_agent", *args)
    assert AgentProfile.objects.count() == 0 and AuditEvent.objects.count() == 0


def test_configure_agent_rejects_both_flags(db):
    with pytest.raises(CommandError):
        run("configure_agent", "x", "--enable", "--disable")


def test_configure_runtime_prints_config(db):
    data = json.loads(
        run(
            "configure_runtime",
            "--provider",
            "fly",
            "--app-name",
            "af-workers",
            "--max-workers",
            "8",
            "--fallback-regions",
            "ams, fra",
            "--lease-seconds",
            "120",
            "--json",
        )
    )
    assert data["provider_kind"] == "fly" and data["max_workers"] == 8
    assert data["fallback_regions"] == ["ams", "fra"] and data["lease_seconds"] == 120
    config = RuntimeConfig.get()
    assert config.app_name == "af-workers"
    assert AuditEvent.objects.filter(action="runtime_config.update").exists()
    out = run("configure_runtime")
    assert "max_workers: 8" in out


@pytest.mark.parametrize(
    "args",
    [
        ["--lease-seconds", "0"],
        ["--spawn-step", "0"],
        ["--max-attempts", "0"],
        ["--provider", "k8s"],
        ["--max-workers", "-1"],
        ["--max-workers", "lots"],
    ],
)
def test_configure_runtime_bad_values_change_nothing(db, args):
    before = RuntimeConfig.get()
    with pytest.raises((CommandError, SystemExit)):
        run("configure_runtime", *args)
    after = RuntimeConfig.objects.get(pk=before.pk)
    assert (
        after.lease_seconds,
        after.spawn_step,
        after.max_attempts,
        after.provider_kind,
        after.max_workers,
    ) == (
        before.lease_seconds,
        before.spawn_step,
        before.max_attempts,
        before.provider_kind,
        before.max_workers,
    )
