"""The ``openclaw`` handler (SPEC §21): its config and environment (no OpenClaw needed), then
real OpenClaw turns against a fake OpenAI-compatible model on loopback, embedded and through
the warm gateway — reply, usage, persona, skills, memory across turns and no key on disk."""

from __future__ import annotations

import json
import os

import pytest

from tests.fakes.openai_server import COMPLETION_TOKENS, PROMPT_TOKENS, FakeOpenAI
from tests.workers.openclaw_support import (
    API_KEY,
    archive_members_containing,
    files_containing,
    request_text,
    require_openclaw,
    runtime_section,
)
from workers.runtime import openclaw as oc
from workers.runtime.archive import make_archive
from workers.runtime.handlers import JobContext
from workers.runtime.openclaw_setup import (
    KEY_ENV,
    Install,
    Layout,
    ModelRuntime,
    build_config,
    child_env,
    prepare,
)

SKILL_MD = "---\nname: greeter\ndescription: Greets people with a pirate salute.\n---\n# Greeter\n"


def context(data_dir, runtime: dict, text="hello", conversation="conv-1") -> JobContext:
    job = {"message_id": 1, "conversation_id": conversation, "agent_key": "alpha",
           "payload": {"message_text": text}}  # fmt: skip
    return JobContext(job=job, bundle={"runtime": runtime}, data_dir=data_dir)


# Config and environment (no OpenClaw needed) ------------------------------------------------
def test_config_names_the_key_variable_and_never_holds_the_key(tmp_path):
    runtime = ModelRuntime.from_bundle({"runtime": runtime_section("http://127.0.0.1:9/v1")})
    layout = Layout(tmp_path)
    config = build_config(layout, runtime, gateway_port=4321)
    provider = config["models"]["providers"]["agent-factory"]
    assert provider["apiKey"] == {"source": "env", "provider": "default", "id": KEY_ENV}
    assert provider["baseUrl"] == "http://127.0.0.1:9/v1"
    assert config["agents"]["defaults"]["model"]["primary"] == "agent-factory/fake-model"
    assert config["agents"]["defaults"]["models"]["agent-factory/fake-model"]["params"] == {
        "temperature": 0.2, "maxTokens": 256}  # fmt: skip
    assert config["gateway"]["auth"] == {"mode": "token"}  # the token comes from the env
    prepare(layout, runtime, gateway_port=4321)
    assert files_containing(tmp_path, API_KEY) == []
    assert (layout.workspace / "SOUL.md").read_text().startswith("You are Pirate Pete.")
    assert os.readlink(layout.workspace / "skills") == "../../skills"


def test_a_built_in_provider_reads_its_own_key_variable(tmp_path):
    runtime = ModelRuntime.from_bundle(
        {"runtime": {"model": "openrouter/anthropic/claude-sonnet-4", "api_key": API_KEY}}
    )
    assert runtime.model_ref == "openrouter/anthropic/claude-sonnet-4"
    assert runtime.key_env == "OPENROUTER_API_KEY"
    assert "models" not in build_config(Layout(tmp_path), runtime, gateway_port=None)
    with pytest.raises(RuntimeError, match="provider/model"):
        ModelRuntime.from_bundle({"runtime": {"model": "gpt-5"}})
    with pytest.raises(RuntimeError, match="runtime.model"):
        ModelRuntime.from_bundle({})


def test_the_child_environment_holds_the_key_and_nothing_of_the_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_FACTORY_WORKER_TOKEN", "worker-secret")
    monkeypatch.setenv("DATABASE_URL", "postgres://x")
    install = Install(tmp_path / "node" / "bin" / "node", tmp_path / "openclaw.mjs", "1")
    runtime = ModelRuntime.from_bundle({"runtime": runtime_section("http://127.0.0.1:9/v1")})
    env = child_env(install, Layout(tmp_path), runtime)
    assert env[KEY_ENV] == API_KEY
    assert env["OPENCLAW_STATE_DIR"] == str(tmp_path / "openclaw")
    assert env["PATH"].startswith(str(tmp_path / "node" / "bin"))
    assert "worker-secret" not in json.dumps(env) and "DATABASE_URL" not in env
    assert not [name for name in env if name.startswith("AGENT_FACTORY_") and name != KEY_ENV]


def test_agent_json_gives_text_media_and_usage():
    runtime = ModelRuntime.from_bundle({"runtime": runtime_section("http://x/v1")})
    reply = oc.parse_agent_json({
        "payloads": [{"text": "one", "mediaUrl": None}, {"text": "two", "mediaUrl": "/w/a.png"}],
        "meta": {"agentMeta": {"provider": "agent-factory", "model": "fake-model",
                               "usage": {"input": 12, "output": 3, "cost": {"total": 0.25}}}},
    }, runtime)  # fmt: skip
    assert reply == "one\n\ntwo" and reply.media == ("/w/a.png",)
    assert reply.usage == {"input_tokens": 12, "output_tokens": 3, "cost_usd": 0.25,
                           "model": "agent-factory/fake-model"}  # fmt: skip


def test_an_unknown_mode_is_refused(monkeypatch):
    monkeypatch.setenv(oc.MODE_ENV, "turbo")
    with pytest.raises(RuntimeError, match="gateway, embedded"):
        oc.mode()


def test_without_an_install_the_turn_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_FACTORY_OPENCLAW_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match="install_openclaw.sh"):
        oc.openclaw(context(tmp_path / "data", runtime_section("http://127.0.0.1:9/v1")))


# Real OpenClaw ---------------------------------------------------------------------------
@pytest.fixture
def data_dir(tmp_path):
    require_openclaw()
    data = tmp_path / "data"
    (data / "skills" / "greeter").mkdir(parents=True)
    (data / "skills" / "greeter" / "SKILL.md").write_text(SKILL_MD)
    return data


def assert_no_key_on_disk(data_dir, tmp_path):
    assert files_containing(data_dir, API_KEY) == []
    archive = tmp_path / "snapshot.tar.gz"
    make_archive(data_dir, archive)
    assert archive_members_containing(archive.read_bytes(), API_KEY) == []
    return archive


@pytest.mark.slow
def test_embedded_turns_remember_and_keep_the_key_off_disk(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(oc.MODE_ENV, "embedded")
    with FakeOpenAI(reply="Arr, ahoy!") as fake:
        runtime = runtime_section(fake.base_url)
        first = oc.openclaw(context(data_dir, runtime, "my parrot is called Polly"))
        second = oc.openclaw(context(data_dir, runtime, "what is my parrot called?"))
    assert first == second == "Arr, ahoy!"
    assert first.usage == {"input_tokens": PROMPT_TOKENS, "output_tokens": COMPLETION_TOKENS,
                           "model": "agent-factory/fake-model"}  # fmt: skip
    assert all(h["authorization"] == f"Bearer {API_KEY}" for h in fake.headers)
    sent = request_text(fake.completions[-1])
    assert "my parrot is called Polly" in sent  # the first turn is in the second's context
    assert "Pirate Pete" in sent  # the persona file
    assert "greeter" in sent  # the global skill, loaded from the workspace's skills/
    last = fake.completions[-1]
    assert last["model"] == "fake-model" and last["temperature"] == 0.2
    assert (data_dir / "openclaw" / "workspace").is_dir()
    archive = assert_no_key_on_disk(data_dir, tmp_path)
    assert archive_members_containing(archive.read_bytes(), "Polly")  # the session travels


@pytest.mark.slow
def test_the_warm_gateway_serves_turns_and_stops_before_a_snapshot(data_dir, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv(oc.MODE_ENV, "gateway")
    with FakeOpenAI(reply="Aye.") as fake:
        runtime = runtime_section(fake.base_url)
        try:
            # The first turn runs embedded while the gateway boots behind it.
            first = oc.openclaw(context(data_dir, runtime, "remember the number 4711"))
            gateway = oc.KEEPER.gateway
            assert gateway is not None and oc.KEEPER.starting is not None
            second = oc.openclaw(context(data_dir, runtime, "which number?"))
            third = oc.openclaw(context(data_dir, runtime, "and again?"))
            assert oc.KEEPER.gateway is gateway and gateway.alive()  # the same warm process
            fake.status = 401  # the key is refused now: a clear error, without the key
            with pytest.raises(RuntimeError) as failure:
                oc.openclaw(context(data_dir, runtime, "still there?"))
        finally:
            oc.openclaw.before_snapshot()
    assert not gateway.alive() and oc.KEEPER.gateway is None
    assert first == second == third == "Aye."
    assert third.usage["input_tokens"] == PROMPT_TOKENS
    sent = request_text(fake.completions[2])  # the third turn, through the gateway
    assert "remember the number 4711" in sent and "which number?" in sent
    assert "Pirate Pete" in sent
    assert "answered 401: authentication_error" in str(failure.value)
    assert API_KEY not in str(failure.value)
    assert all(h["authorization"] == f"Bearer {API_KEY}" for h in fake.headers)
    assert gateway.token not in (data_dir / ".af-tmp" / "gateway.log").read_text()
    assert files_containing(data_dir, gateway.token) == []
    assert_no_key_on_disk(data_dir, tmp_path)


@pytest.mark.slow
def test_a_dead_model_endpoint_fails_the_turn_without_the_key(data_dir, monkeypatch):
    monkeypatch.setenv(oc.MODE_ENV, "embedded")
    with FakeOpenAI(status=500) as fake, pytest.raises(RuntimeError) as failure:
        oc.openclaw(context(data_dir, runtime_section(fake.base_url, timeout_seconds=60)))
    assert API_KEY not in str(failure.value)


def test_the_runner_lets_a_handler_release_the_data_dir_before_a_snapshot(tmp_path):
    from tests.workers.test_runtime_loop import FakeServer, make_job, make_runtime

    calls = []

    def handler(ctx):
        return "ok"

    handler.before_snapshot = lambda: calls.append("released")
    runtime = make_runtime(FakeServer([make_job()]), tmp_path, handler=handler)
    runtime.snapshot("drain")
    assert calls == ["released"]


def test_the_workspace_skills_link_is_never_archived(tmp_path):
    import tarfile

    runtime = ModelRuntime.from_bundle({"runtime": runtime_section("http://127.0.0.1:9/v1")})
    data = tmp_path / "data"
    (data / "skills" / "greeter").mkdir(parents=True)
    prepare(Layout(data), runtime)
    archive = tmp_path / "a.tar.gz"
    make_archive(data, archive)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "openclaw/workspace/SOUL.md" in names
    assert not [n for n in names if n.startswith(("openclaw/workspace/skills", "skills"))]


def test_an_empty_reply_is_a_failure_not_a_silent_success(tmp_path, monkeypatch):
    monkeypatch.setattr(oc, "find_install", lambda: None)
    monkeypatch.setattr(oc.KEEPER, "turn", lambda *args: oc.AgentReply.of("  "))
    with pytest.raises(RuntimeError, match="without a reply"):
        oc.openclaw(context(tmp_path, runtime_section("http://127.0.0.1:9/v1")))
