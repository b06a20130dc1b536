"""Foundation commands through their ``manage.py`` argv path: each has a success path and
bad arguments that end in exactly one clear stderr line, a non-zero exit and no writes."""

from __future__ import annotations

import json

import pytest

from agents.models import AgentProfile, AuditEvent, RuntimeConfig, Secret
from agents.secret_store import get_active_secret_value, import_secret


def assert_refused(result, message: str, code: int | None = None) -> None:
    assert result.code != 0, result
    if code is not None:
        assert result.code == code
    assert len(result.err_lines) == 1, result.err  # one line, never a usage block/traceback
    assert message in result.err_lines[0], result.err


# import_secret ---------------------------------------------------------------------------


def test_import_secret_from_stdin(cli, db):
    result = cli("import_secret", "openai.key", stdin="sk-abc\n")
    assert result.code == 0 and result.err == ""
    assert result.out.strip() == "Stored openai.key version 1."
    assert get_active_secret_value("openai.key") == "sk-abc"  # one trailing newline dropped
    assert "sk-abc" not in result.out
    event = AuditEvent.objects.get(action="secret.import")
    assert event.actor == "command:import_secret" and event.details["version"] == 1
    result = cli("import_secret", "openai.key", "--json", stdin="sk-def")
    data = json.loads(result.out)
    assert data == {
        "secret_ref": "openai.key",
        "version": 2,
        "active": True,
        "key_id": Secret.objects.get(version=2).key_id,
    }
    assert list(Secret.objects.filter(active=True).values_list("version", flat=True)) == [2]


def test_import_secret_keeps_inner_whitespace(cli, db):
    cli("import_secret", "pem", stdin="line1\nline2\n\n")
    assert get_active_secret_value("pem") == "line1\nline2\n"


def test_import_secret_prompts_without_echo_on_a_terminal(cli, db, monkeypatch):
    prompts = []

    class Terminal:
        def isatty(self):
            return True

        def read(self):  # pragma: no cover - must not be used on a terminal
            raise AssertionError("read stdin instead of prompting")

    def fake_getpass(prompt):
        prompts.append(prompt)
        return "typed-value"

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    from agents.management.commands import import_secret as module

    monkeypatch.setattr(module.sys, "stdin", Terminal())
    command = module.Command()
    command.run_from_argv(["manage.py", "import_secret", "typed.ref"])
    assert prompts == ["Value for typed.ref: "]
    assert get_active_secret_value("typed.ref") == "typed-value"


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["openai.key"], "", "Refusing to store an empty value"),
        (["openai.key"], "\n", "Refusing to store an empty value"),
        (["openai.key"], "   \n", "Refusing to store an empty value"),
        (["bad ref!"], "v", "Secret ref must be"),
        (["x" * 201], "v", "Secret ref must be"),
        (["big"], "x" * (64 * 1024 + 1), "larger than 64 KiB"),
        ([], "v", "the following arguments are required: secret_ref"),
        (["a", "b"], "v", "unrecognized arguments: b"),
    ],
)
def test_import_secret_refuses(cli, db_state, args, stdin, message):
    import_secret("openai.key", "existing", actor="t")
    before = db_state()
    result = cli("import_secret", *args, stdin=stdin)
    assert_refused(result, message)
    assert db_state() == before
    assert get_active_secret_value("openai.key") == "existing"


# secret_status ---------------------------------------------------------------------------


def test_secret_status_text_and_json(cli, db):
    assert cli("secret_status").out.strip() == "No secrets stored."
    for value in ("x1-hidden", "x2-hidden"):
        cli("import_secret", "a.b", stdin=value)
    cli("import_secret", "c.d", stdin="x3-hidden")
    result = cli("secret_status")
    assert result.code == 0
    lines = result.out.strip().splitlines()
    assert lines[0].startswith("a.b: v2 of 2, key ") and lines[1].startswith("c.d: v1 of 1")
    data = json.loads(cli("secret_status", "--json").out)
    assert [row["secret_ref"] for row in data["secrets"]] == ["a.b", "c.d"]
    row = data["secrets"][0]
    assert set(row) == {"secret_ref", "active_version", "versions", "key_id", "updated_at"}
    assert row["active_version"] == 2 and row["versions"] == 2
    everything = result.out + json.dumps(data)
    assert "hidden" not in everything
    # Filtering by ref, including a ref that has nothing stored.
    data = json.loads(cli("secret_status", "c.d", "missing.ref", "--json").out)
    found, missing = data["secrets"]
    assert (found["secret_ref"], found["active_version"], found["versions"]) == ("c.d", 1, 1)
    assert missing == {
        "secret_ref": "missing.ref",
        "active_version": None,
        "versions": 0,
        "key_id": None,
        "updated_at": None,
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["bad ref!"], "Secret ref must be"),
    ],
)
def test_secret_status_bad_arguments(cli, db_state, args, message):
    before = db_state()
    assert_refused(cli("secret_status", *args), message)
    assert db_state() == before


# rotate_encryption_key -------------------------------------------------------------------


def test_rotate_encryption_key_success_and_audit(cli, db):
    import_secret("a", "one", actor="t")
    result = cli("rotate_encryption_key")
    assert result.code == 0 and result.err == ""
    assert "Re-encrypted 0 secret version(s)" in result.out and "1 already current" in result.out
    event = AuditEvent.objects.get(action="secret.rotate_encryption_key")
    assert event.actor == "command:rotate_encryption_key"
    assert event.details == {"rotated": 0, "already_current": 1, "failed": 0}


def test_rotate_encryption_key_bad_arguments(cli, db_state):
    import_secret("a", "one", actor="t")
    before = db_state()
    assert_refused(cli("rotate_encryption_key", "extra"), "unrecognized arguments: extra")
    assert db_state() == before


def test_rotate_encryption_key_reports_undecryptable_rows_in_one_line(cli, db):
    good = import_secret("good", "one", actor="t")
    lost = import_secret("lost", "two", actor="t")
    Secret.objects.filter(pk=lost.pk).update(key_id="deadbeef")
    result = cli("rotate_encryption_key")
    assert_refused(result, "1 secret version(s) could not be decrypted", code=1)
    assert "failed: lost v1" in result.out  # the details are in the report
    assert Secret.objects.get(pk=lost.pk).key_id == "deadbeef"  # left as it was
    assert get_active_secret_value("good") == "one"
    assert Secret.objects.get(pk=good.pk).key_id == good.key_id
    event = AuditEvent.objects.get(action="secret.rotate_encryption_key")
    assert event.details["failed"] == 1


# configure_agent -------------------------------------------------------------------------


def test_configure_agent_create_update_and_audit(cli, db):
    result = cli(
        "configure_agent",
        "sales-bot",
        "--secrets-ref",
        "openai.key",
        "anthropic.key",
        "--secrets-ref",
        "third.key",
        "--require-telegram-binding",
        "--json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["created"] and data["version"] == 1 and data["enabled"]
    assert data["secrets_ref"] == ["openai.key", "anthropic.key", "third.key"]
    assert data["require_telegram_binding"]
    data = json.loads(cli("configure_agent", "sales-bot", "--disable", "--json").out)
    assert not data["enabled"] and data["version"] == 2 and not data["created"]
    assert data["secrets_ref"] == ["openai.key", "anthropic.key", "third.key"]  # kept
    bridge = '{"enabled": true, "base_url": "https://app.example", "service_id": "svc"}'
    data = json.loads(cli("configure_agent", "sales-bot", "--bridge-json", bridge, "--json").out)
    assert data["bridge_config"]["service_id"] == "svc" and data["version"] == 3
    assert cli("configure_agent", "sales-bot").out.strip() == (
        "Updated agent 'sales-bot' (version 3)."
    )
    events = list(AuditEvent.objects.order_by("pk").values_list("action", "actor", "details"))
    assert [e[0] for e in events] == ["agent.create", "agent.update", "agent.update"]
    assert {e[1] for e in events} == {"command:configure_agent"}
    assert events[1][2]["changed"] == ["enabled"]


def test_configure_agent_without_a_change_writes_nothing(cli, db_state):
    cli("configure_agent", "quiet", "--disable")
    before = db_state()
    result = cli("configure_agent", "quiet", "--disable")
    assert result.code == 0
    assert db_state() == before  # no version bump, no audit row for a no-op


@pytest.mark.parametrize(
    "args, message",
    [
        (["Bad Key!"], "Agent key must be a slug"),
        (["ok-key", "--secrets-ref"], "argument --secrets-ref: expected at least one argument"),
        (["ok-key", "--bridge-json", "{not json"], "--bridge-json is not valid JSON"),
        (["ok-key", "--bridge-json", "[1]"], "--bridge-json must be a JSON object"),
        (["ok-key", "--bridge-json", '{"enabled": true}'], "needs 'base_url'"),
        (["ok-key", "--bridge-json", '{"colour": "red"}'], "Unknown bridge config key(s): colour"),
        (["ok-key", "--bridge-json", '{"enabled": "yes"}'], "'enabled' must be a bool"),
        (["ok-key", "--secrets-ref", "bad ref"], "Secret ref must be"),
        (["ok-key", "--enable", "--disable"], "not allowed with argument"),
        (
            ["ok-key", "--require-telegram-binding", "--no-require-telegram-binding"],
            "not allowed with argument",
        ),
        ([], "the following arguments are required: agent_key"),
    ],
)
def test_configure_agent_bad_input_writes_nothing(cli, db_state, args, message):
    before = db_state()
    assert_refused(cli("configure_agent", *args), message)
    assert db_state() == before
    assert AgentProfile.objects.count() == 0


def test_configure_agent_bad_update_leaves_the_profile_alone(cli, db_state):
    cli("configure_agent", "keep", "--secrets-ref", "a.key")
    before = db_state()
    result = cli("configure_agent", "keep", "--disable", "--secrets-ref", "bad ref")
    assert_refused(result, "Secret ref must be")
    assert db_state() == before
    assert AgentProfile.objects.get().enabled  # the valid half was not applied either


# configure_runtime -----------------------------------------------------------------------


def test_configure_runtime_prints_config(cli, db):
    result = cli(
        "configure_runtime",
        "--provider",
        "fly",
        "--app-name",
        "af-workers",
        "--org",
        "acme",
        "--image",
        "registry.fly.io/af:1",
        "--region",
        "ams",
        "--fallback-regions",
        "fra, cdg",
        "--volume-name",
        "data",
        "--volume-path",
        "/srv",
        "--volume-size-gb",
        "3",
        "--max-workers",
        "8",
        "--spawn-step",
        "2",
        "--idle-timeout-seconds",
        "600",
        "--lease-seconds",
        "120",
        "--stale-after-seconds",
        "300",
        "--max-attempts",
        "7",
        "--system-prompt",
        "Be brief.",
        "--json",
    )
    assert result.code == 0, result.err
    data = json.loads(result.out)
    expected = {
        "provider_kind": "fly",
        "app_name": "af-workers",
        "organization_slug": "acme",
        "image": "registry.fly.io/af:1",
        "region": "ams",
        "fallback_regions": ["fra", "cdg"],
        "volume_name": "data",
        "volume_path": "/srv",
        "volume_size_gb": 3,
        "max_workers": 8,
        "spawn_step": 2,
        "idle_timeout_seconds": 600,
        "lease_seconds": 120,
        "stale_after_seconds": 300,
        "max_attempts": 7,
        "system_prompt": "Be brief.",
    }
    assert {key: data[key] for key in expected} == expected
    config = RuntimeConfig.get()
    assert {key: getattr(config, key) for key in expected} == expected
    event = AuditEvent.objects.get(action="runtime_config.update")
    assert event.actor == "command:configure_runtime"
    assert event.details["changed"] == sorted(expected)
    result = cli("configure_runtime")  # no options: print only, write nothing
    assert "max_workers: 8" in result.out and "lease_seconds: 120" in result.out
    assert AuditEvent.objects.count() == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lease-seconds", "0"], "lease_seconds: Ensure this value is greater than or equal"),
        (["--spawn-step", "0"], "spawn_step: Ensure this value is greater than or equal to 1"),
        (["--max-attempts", "0"], "max_attempts: Ensure this value is greater than or equal"),
        (["--max-attempts", "101"], "max_attempts: Ensure this value is less than or equal"),
        (["--max-workers", "1001"], "max_workers: Ensure this value is less than or equal"),
        (["--volume-size-gb", "0"], "volume_size_gb: Ensure this value is greater than"),
        (["--idle-timeout-seconds", "5"], "idle_timeout_seconds: Ensure this value is greater"),
        (["--stale-after-seconds", "1"], "stale_after_seconds: Ensure this value is greater"),
        (["--fallback-regions", "ams,,"], None),
        (["--provider", "k8s"], "argument --provider: invalid choice: 'k8s'"),
        (["--max-workers", "-1"], "argument --max-workers: must not be negative, got -1"),
        (["--max-workers", "lots"], "argument --max-workers: expected a whole number"),
        (["--volume-name", "x" * 31], "volume_name: Ensure this value has at most 30"),
        (["--region"], "argument --region: expected one argument"),
    ],
)
def test_configure_runtime_bad_values_change_nothing(cli, db_state, args, message):
    RuntimeConfig.get()
    before = db_state()
    result = cli("configure_runtime", "--max-workers", "9", *args)
    if message is None:  # empty entries are dropped, not an error
        assert result.code == 0 and RuntimeConfig.get().fallback_regions == ["ams"]
        return
    assert_refused(result, message)
    assert db_state() == before  # the valid --max-workers 9 was not applied either
