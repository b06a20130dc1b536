"""A Fly machine's env is built from scratch (SPEC §23): the worker names, upstream's
runtime defaults and the agent's bridge values — never the server's own secrets, whatever
the server's environment holds."""

from __future__ import annotations

from agents.models import RuntimeConfig
from fly.provider import runtime_env
from workers.providers.base import SpawnRequest

SERVER_ONLY = {
    "SECRET_KEY": "server-secret-key",
    "AGENT_FACTORY_ENCRYPTION_KEYS": "c2VydmVyLWtleQ==",
    "DATABASE_URL": "postgres://u:p@db/factory",
    "FLY_API_TOKEN": "fly-token",
    "REDIS_URL": "redis://:pw@redis/0",
    "METRICS_TOKEN": "metrics-token",
}


def test_machine_env_holds_no_server_secret(fly_config, alpha_agent, monkeypatch):
    for name, value in SERVER_ONLY.items():
        monkeypatch.setenv(name, value)
    env = runtime_env(
        RuntimeConfig.get(),
        SpawnRequest(
            worker_id="w-1",
            token="wk_tok",
            api_url="https://factory.test",
            conversation_id="conv-1",
            agent_key="alpha",
        ),
    )
    assert env["AGENT_FACTORY_WORKER_TOKEN"] == "wk_tok"
    assert not set(env) & set(SERVER_ONLY)
    assert not set(env.values()) & set(SERVER_ONLY.values())
    # Only the worker's own names, upstream's OpenClaw/skills defaults and the legacy ids.
    assert all(
        name.startswith(("AGENT_FACTORY_", "OPENCLAW_", "SKILLS_", "WORKER_"))
        or name in {"NODE_ENV", "WORKSPACE_ID"}
        for name in env
    ), sorted(env)
