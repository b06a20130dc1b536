"""The Fly tests' strict `responses` mock, the Fly runtime config, and the request bodies
and call sequences the tests expect."""

from __future__ import annotations

import json

import pytest
import responses
from responses import matchers
from responses.registries import OrderedRegistry

from agents.models import RuntimeConfig
from fly.provider import volume_name
from workers.models import Worker

BASE = "http://fly.test/v1"
TOKEN = "fly-secret-token-123"
APP = "af-workers"
A = f"{BASE}/apps/{APP}"


@pytest.fixture
def fly_config(db, settings):
    settings.FLY_API_TOKEN = TOKEN
    RuntimeConfig.get()
    RuntimeConfig.objects.filter(pk=1).update(
        provider_kind="fly",
        app_name=APP,
        image="registry.fly.io/agent:1",
        region="ams",
        fallback_regions=["fra"],
        volume_name="agent_data",
        volume_size_gb=2,
    )


class StrictFly:
    """Register expected calls; anything else (or out of order) fails."""

    def __init__(self, mock: responses.RequestsMock):
        self.mock = mock

    def expect(self, method, url, *, body=None, query=None, status=200, json=None, text=None, **kw):
        """``body``/``query``: what the request must carry (exactly); ``json``/``text``: the
        response."""
        match = [
            matchers.query_param_matcher(query or {}),
            matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"}, strict_match=False),
            matchers.json_params_matcher(body) if body is not None else _no_body,
        ]
        if json is not None:
            kw["json"] = json
        elif text is not None:
            kw["body"] = text
        elif status < 400:
            kw["json"] = {}
        self.mock.add(method, url, status=status, match=match, **kw)

    @property
    def calls(self) -> list[str]:
        return [f"{c.request.method} {c.request.url.replace(BASE, '')}" for c in self.mock.calls]

    def body(self, index: int) -> dict:
        return json.loads(self.mock.calls[index].request.body)


def _no_body(request):
    return (not request.body, f"unexpected request body {request.body!r}")


@pytest.fixture
def fly():
    with responses.RequestsMock(
        assert_all_requests_are_fired=True, registry=OrderedRegistry
    ) as mock:
        strict = StrictFly(mock)
        yield strict
        unmatched = [
            f"{c.request.method} {c.request.url}"
            for c in mock.calls
            if isinstance(c.response, Exception)
        ]
        assert not unmatched, f"unexpected Fly calls: {unmatched}"


def machine_body(worker_id="w-1", region="ams", volume_id="vol_1") -> dict:
    return {
        "name": worker_id,
        "region": region,
        "config": {
            "image": "registry.fly.io/agent:1",
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 1024},
            "mounts": [{"volume": volume_id, "path": "/data"}],
            "env": {
                "NODE_ENV": "production",
                "OPENCLAW_GATEWAY_HOST": "127.0.0.1",
                "OPENCLAW_GATEWAY_PORT": "18789",
                "OPENCLAW_GATEWAY_URL": "http://127.0.0.1:18789",
                "OPENCLAW_STATE_DIR": "/data/.clawdbot",
                "OPENCLAW_WORKSPACE_DIR": "/data/workspace",
                "OPENCLAW_CONFIG_PATH": "/data/.clawdbot/openclaw.json",
                "OPENCLAW_REQUIRE_DATA_MOUNT": "true",
                "OPENCLAW_RUN_SETUP": "false",
                "OPENCLAW_SETUP_TIMEOUT_MS": "90000",
                "OPENCLAW_GATEWAY_COMMAND": "node /app/openclaw.mjs gateway",
                "OPENCLAW_GATEWAY_READY_TIMEOUT_MS": "60000",
                "OPENCLAW_GATEWAY_READY_POLL_MS": "500",
                "OPENCLAW_GATEWAY_READY_REQUIRED": "true",
                "SKILLS_BOOTSTRAP_MODE": "db_manifest",
                "SKILLS_BOOTSTRAP_REQUIRED": "false",
                "SKILLS_BOOTSTRAP_TIMEOUT_MS": "15000",
                "SKILLS_RELEASE_CHANNEL": "stable",
                "OPENCLAW_SKILLS_DIR": "/data/workspace/skills",
                "WORKER_ID": worker_id,
                "WORKSPACE_ID": "default",
                "WORKER_IDLE_TIMEOUT_MS": "1800000",
                "AGENT_FACTORY_WORKER_ID": worker_id,
                "AGENT_FACTORY_WORKER_TOKEN": "wk_tok",
                "AGENT_FACTORY_API_URL": "https://factory.test",
                "AGENT_FACTORY_DATA_DIR": "/data",
                "AGENT_FACTORY_IDLE_EXIT_SECONDS": "1800",
                "AGENT_FACTORY_CONVERSATION_ID": "conv-1",
                "AGENT_FACTORY_AGENT_KEY": "alpha",
                "OPENCLAW_CONVERSATION_ID": "conv-1",
                "OPENCLAW_AGENT_KEY": "alpha",
            },
            "auto_destroy": False,
            "restart": {"policy": "on-failure", "max_retries": 3},
        },
    }


def volume_body(worker_id="w-1", region="ams") -> dict:
    return {"name": volume_name("agent_data", worker_id), "region": region, "size_gb": 2}


def fly_worker(**fields):
    defaults = dict(
        worker_id="w-1",
        provider="fly",
        machine_app=APP,
        machine_id="m_1",
        volume_id="vol_1",
        status="stopping",
    )
    return Worker.objects.create(**{**defaults, **fields})


def cleanup_mocks(fly, *, app=APP, failing_machine=None, machines_left=(), volumes_left=()):
    base = f"{BASE}/apps/{app}"
    fly.expect("GET", base, json={"name": app})
    fly.expect("GET", f"{base}/machines", json=[{"id": "m_1"}, {"id": "m_2"}])
    for machine in ("m_1", "m_2"):
        fly.expect("POST", f"{base}/machines/{machine}/cordon")
        fly.expect("POST", f"{base}/machines/{machine}/stop")
        if machine == failing_machine:
            fly.expect(
                "DELETE",
                f"{base}/machines/{machine}",
                query={"force": "true"},
                status=409,
                json={"error": "failed_precondition"},
            )
        else:
            fly.expect("DELETE", f"{base}/machines/{machine}", query={"force": "true"})
    fly.expect("GET", f"{base}/machines", json=[{"id": m} for m in machines_left])
    fly.expect("GET", f"{base}/volumes", json=[{"id": "vol_1"}, {"id": "vol_2"}])
    fly.expect("DELETE", f"{base}/volumes/vol_1")
    fly.expect("DELETE", f"{base}/volumes/vol_2")
    fly.expect("GET", f"{base}/volumes", json=[{"id": v} for v in volumes_left])


def cleanup_sequence(app=APP):
    p = f"/apps/{app}"
    return [
        f"GET {p}",
        f"GET {p}/machines",
        f"POST {p}/machines/m_1/cordon",
        f"POST {p}/machines/m_1/stop",
        f"DELETE {p}/machines/m_1?force=true",
        f"POST {p}/machines/m_2/cordon",
        f"POST {p}/machines/m_2/stop",
        f"DELETE {p}/machines/m_2?force=true",
        f"GET {p}/machines",
        f"GET {p}/volumes",
        f"DELETE {p}/volumes/vol_1",
        f"DELETE {p}/volumes/vol_2",
        f"GET {p}/volumes",
    ]
