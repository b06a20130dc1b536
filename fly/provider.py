"""The Fly provider: one volume and one machine per worker (SPEC §11)."""

from __future__ import annotations

import hashlib
import re

from django.conf import settings

from agents.models import AgentProfile, RuntimeConfig
from agents.secret_refs import linking_secret_candidates, service_key_candidates
from agents.secret_store import get_active_secret_value
from fly.client import FlyApiError, FlyClient, FlyConfigurationError
from workers.models import Worker
from workers.providers.base import (
    Provider,
    ProviderError,
    SpawnFailed,
    SpawnRequest,
    SpawnResult,
)

GONE_STATES = {"destroyed", "destroying", "failed", "launch_failed", "replaced", "migrated"}


def volume_name(prefix: str, worker_id: str) -> str:
    """A Fly volume name (≤ 30 chars of [a-z0-9_]) unique to the worker."""
    clean = re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", prefix.lower())).strip("_") or "agent"
    digest = hashlib.sha256(worker_id.encode()).hexdigest()[:8]
    return f"{clean[:21]}_{digest}"


def default_runtime_env(data: str) -> dict[str, str]:
    """Upstream's DEFAULT_WORKER_RUNTIME_ENV (reference/scheduler_fly.md §2.2), so an
    OpenClaw image boots as it would under upstream; paths follow the configured mount
    rather than a hard-coded /data."""
    return {
        "NODE_ENV": "production",
        "OPENCLAW_GATEWAY_HOST": "127.0.0.1",
        "OPENCLAW_GATEWAY_PORT": "18789",
        "OPENCLAW_GATEWAY_URL": "http://127.0.0.1:18789",
        "OPENCLAW_STATE_DIR": f"{data}/.clawdbot",
        "OPENCLAW_WORKSPACE_DIR": f"{data}/workspace",
        "OPENCLAW_CONFIG_PATH": f"{data}/.clawdbot/openclaw.json",
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
        "OPENCLAW_SKILLS_DIR": f"{data}/workspace/skills",
    }


def runtime_env(config: RuntimeConfig, request: SpawnRequest) -> dict[str, str]:
    data = config.volume_path or "/data"
    env = {
        **default_runtime_env(data),
        "WORKER_ID": request.worker_id,
        "WORKSPACE_ID": "default",
        "WORKER_IDLE_TIMEOUT_MS": str(config.idle_timeout_seconds * 1000),
        "AGENT_FACTORY_WORKER_ID": request.worker_id,
        "AGENT_FACTORY_WORKER_TOKEN": request.token,
        "AGENT_FACTORY_API_URL": request.api_url,
        "AGENT_FACTORY_DATA_DIR": data,
        "AGENT_FACTORY_IDLE_EXIT_SECONDS": str(config.idle_timeout_seconds),
        "AGENT_FACTORY_CONVERSATION_ID": request.conversation_id or "",
        "AGENT_FACTORY_AGENT_KEY": request.agent_key or "",
        "OPENCLAW_CONVERSATION_ID": request.conversation_id or "",
        "OPENCLAW_AGENT_KEY": request.agent_key or "",
    }
    env.update(forwarded_bridge_env(request.agent_key))
    env.update(request.env)
    return {key: value for key, value in env.items() if value and str(value).strip()}


def forwarded_bridge_env(agent_key: str | None) -> dict[str, str]:
    """OPENCLAW_SERVICE_ID / _SERVICE_KEY / _LINKING_SHARED_SECRET, when they resolve."""
    if not agent_key:
        return {}
    profile = AgentProfile.objects.filter(agent_key=agent_key).first()
    bridge = (profile.bridge_config if profile else {}) or {}
    env = {}
    if bridge.get("service_id"):
        env["OPENCLAW_SERVICE_ID"] = bridge["service_id"]
    for ref in service_key_candidates(agent_key, bridge.get("service_key_secret_ref")):
        value = get_active_secret_value(ref)
        if value:
            env["OPENCLAW_SERVICE_KEY"] = value
            break
    for ref in linking_secret_candidates(agent_key):
        value = get_active_secret_value(ref)
        if value:
            env["OPENCLAW_LINKING_SHARED_SECRET"] = value
            break
    return env


def _created_id(reply: dict, path: str) -> str:
    """The id in a create call's reply. A reply without one is treated as "may have been
    created" (an error with no status), so the failed spawn looks for it by name."""
    if not reply.get("id"):
        raise FlyApiError("POST", path, None, "response has no id")
    return reply["id"]


class FlyProvider(Provider):
    name = "fly"

    def __init__(self, client: FlyClient | None = None):
        self._client = client

    @property
    def client(self) -> FlyClient:
        if self._client is None:
            try:
                self._client = FlyClient()
            except FlyConfigurationError as exc:
                raise ProviderError(str(exc))
        return self._client

    def _config(self) -> RuntimeConfig:
        config = RuntimeConfig.get()
        # No image in the runtime config: the worker image (deploy/worker.Dockerfile).
        config.image = config.image or settings.AGENT_FACTORY_WORKER_IMAGE
        if not config.app_name or not config.image:
            raise ProviderError("The Fly provider needs an app name and an image (runtime config).")
        return config

    def preflight(self) -> None:
        self._config()
        self.client  # noqa: B018 -- resolves the token (FLY_API_TOKEN or the secret)

    def spawn(self, request: SpawnRequest) -> SpawnResult:
        config = self._config()
        regions = [config.region] + [r for r in config.fallback_regions if r != config.region]
        errors = []
        for region in regions:
            volume_id = ""
            try:
                volume = self.client.create_volume(
                    config.app_name,
                    name=volume_name(config.volume_name, request.worker_id),
                    region=region,
                    size_gb=config.volume_size_gb,
                )
                volume_id = _created_id(volume, f"/apps/{config.app_name}/volumes")
                machine = self.client.create_machine(
                    config.app_name, self._machine_body(config, request, region, volume_id)
                )
                return SpawnResult(
                    machine_id=_created_id(machine, f"/apps/{config.app_name}/machines"),
                    machine_app=config.app_name,
                    region=machine.get("region") or region,
                    volume_id=volume_id,
                )
            except FlyApiError as exc:
                leftover, problems = self._undo_failed_create(
                    config, request.worker_id, region, volume_id, exc
                )
                if leftover is not None:
                    # Never move on (or give up) silently while something may still bill.
                    raise SpawnFailed("; ".join([str(exc), *problems]), leftover)
                if exc.capacity:
                    errors.append(f"{region}: {exc}")
                    continue
                raise ProviderError(str(exc))
        raise ProviderError("No capacity in any region: " + "; ".join(errors))

    def _undo_failed_create(
        self, config, worker_id: str, region: str, volume_id: str, exc: FlyApiError
    ) -> tuple[SpawnResult | None, list[str]]:
        """Remove what a failed spawn created. Returns what is (maybe) left, and why.

        A timeout or a 5xx may hide a create that did happen, so then the machine (named
        after the worker) or the volume (named after it too) is looked up by name.
        """
        app = config.app_name
        ambiguous = exc.status is None or exc.status >= 500
        problems: list[str] = []
        machine_left = ""
        volume_ids = [volume_id] if volume_id else []
        try:
            if ambiguous and volume_id:  # the machine create was the uncertain call
                for machine_id in self._named_machines(app, worker_id):
                    try:
                        self.client.destroy_machine(app, machine_id, force=True)
                    except FlyApiError as destroy_exc:
                        if not destroy_exc.not_found:
                            machine_left = machine_id
                            problems.append(f"machine {machine_id} left behind: {destroy_exc}")
            elif ambiguous:  # the volume create was the uncertain call
                volume_ids += self._named_volumes(
                    app, worker_id, prefix=config.volume_name, region=region
                )
        except FlyApiError as list_exc:
            problems.append(f"could not check for resources left behind: {list_exc}")
        volume_left = ""
        for vid in volume_ids:
            try:
                self.client.delete_volume(app, vid)
            except FlyApiError as delete_exc:
                if not delete_exc.not_found:
                    volume_left = volume_left or vid
                    problems.append(f"volume {vid} left behind: {delete_exc}")
        if not problems:
            return None, []
        return (
            SpawnResult(
                machine_id=machine_left, machine_app=app, region=region, volume_id=volume_left
            ),
            problems,
        )

    def _machine_body(self, config, request: SpawnRequest, region: str, volume_id: str) -> dict:
        return {
            "name": request.worker_id,
            "region": region,
            "config": {
                "image": config.image,
                "guest": {
                    "cpu_kind": "shared",
                    "cpus": config.guest_cpus,
                    "memory_mb": config.guest_memory_mb,
                },
                "mounts": [{"volume": volume_id, "path": config.volume_path or "/data"}],
                "env": runtime_env(config, request),
                "auto_destroy": False,
                "restart": {"policy": "on-failure", "max_retries": 3},
            },
        }

    def is_gone(self, worker: Worker) -> bool:
        if not worker.machine_id:
            return False
        try:
            machine = self.client.get_machine(
                worker.machine_app or self._config().app_name, worker.machine_id
            )
        except FlyApiError as exc:
            if exc.not_found:
                return True
            raise ProviderError(str(exc))
        return machine.get("state") in GONE_STATES

    def teardown(self, worker: Worker, *, force: bool = False) -> None:
        app = worker.machine_app or self._config().app_name
        try:
            # A row without ids (a reconcile that died mid-spawn) may still own a machine
            # and a volume: both are named after the worker, so look them up by name.
            machine_ids = (
                [worker.machine_id]
                if worker.machine_id
                else self._named_machines(app, worker.worker_id)
            )
            for machine_id in machine_ids:
                self._teardown_machine(app, machine_id, force=force)
            volume_ids = (
                [worker.volume_id]
                if worker.volume_id
                else self._named_volumes(app, worker.worker_id)
            )
            for volume_id in volume_ids:
                try:
                    self.client.delete_volume(app, volume_id)
                except FlyApiError as exc:
                    if not exc.not_found:
                        raise
        except FlyApiError as exc:
            raise ProviderError(str(exc))

    def _teardown_machine(self, app: str, machine_id: str, *, force: bool) -> None:
        for step in (self.client.cordon_machine, self.client.stop_machine):
            try:
                step(app, machine_id)
            except FlyApiError as exc:
                if exc.not_found:
                    return  # already gone: nothing to stop or destroy
                # cordon/stop failures are not fatal: destroy (forced on retry) follows
        try:
            self.client.destroy_machine(app, machine_id, force=force)
        except FlyApiError as exc:
            if not exc.not_found:
                raise

    def _named_machines(self, app: str, worker_id: str) -> list[str]:
        return [m["id"] for m in self.client.list_machines(app) if m.get("name") == worker_id]

    def _named_volumes(
        self, app: str, worker_id: str, *, prefix: str | None = None, region: str | None = None
    ) -> list[str]:
        """The worker's volumes (in ``region`` only, when given)."""
        name = volume_name(RuntimeConfig.get().volume_name if prefix is None else prefix, worker_id)
        return [
            v["id"]
            for v in self.client.list_volumes(app)
            if v.get("name") == name and (region is None or v.get("region") == region)
        ]
