"""Where OpenClaw lives and how a worker sets it up for a turn (SPEC §21).

Everything OpenClaw keeps is under ``<data dir>/openclaw`` — its state dir (config, sessions,
memory, SQLite databases) with the agent's workspace at ``<state>/workspace`` — so the
snapshot of SPEC §9 carries the agent from one worker to the next. The global skills the
worker materialised in ``<data dir>/skills`` are linked in as the workspace's ``skills/``
(OpenClaw's highest-precedence skill root); that link is never archived (``archive.PROTECTED``).

The model key never lands on disk: OpenClaw's config names the environment variable that
holds it (a SecretRef, ``{"source": "env", "id": …}``), and only the OpenClaw child process
gets that variable. The child's environment is built from scratch: the worker's own token
and settings never reach the agent.

The install is found through the manifest ``scripts/install_openclaw.sh`` writes
(``<home>/installed.json``: versions, the ``node`` binary and OpenClaw's entry script);
``AGENT_FACTORY_OPENCLAW_HOME`` says where (default ``~/.cache/agent-factory/openclaw``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "AGENT_FACTORY_OPENCLAW_HOME"
# The variable holding the model key in the OpenClaw child (custom provider); a built-in
# provider reads its own conventional ``<PROVIDER>_API_KEY`` instead.
KEY_ENV = "AGENT_FACTORY_MODEL_API_KEY"
GATEWAY_TOKEN_ENV = "OPENCLAW_GATEWAY_TOKEN"
# The provider id of a runtime with its own OpenAI-compatible ``base_url``.
CUSTOM_PROVIDER = "agent-factory"
PERSONA_FILE = "SOUL.md"  # OpenClaw's "persona, tone and boundaries" workspace file
DEFAULT_TIMEOUT_SECONDS = 300


class OpenClawUnavailable(RuntimeError):
    """OpenClaw is not installed where the worker looks (run scripts/install_openclaw.sh)."""


def default_home() -> Path:
    return Path.home() / ".cache" / "agent-factory" / "openclaw"


@dataclass(frozen=True)
class Install:
    node: Path
    entry: Path
    version: str

    def command(self, *args: str) -> list[str]:
        return [str(self.node), str(self.entry), *args]


def find_install(environ=os.environ) -> Install:
    home = Path(environ.get(HOME_ENV) or default_home())
    manifest = home / "installed.json"
    try:
        data = json.loads(manifest.read_text())
        install = Install(Path(data["node"]), Path(data["entry"]), data["openclaw_version"])
    except (OSError, ValueError, KeyError) as exc:
        raise OpenClawUnavailable(
            f"OpenClaw is not installed in {home} ({type(exc).__name__}); "
            "run scripts/install_openclaw.sh or set AGENT_FACTORY_OPENCLAW_HOME."
        ) from None
    if not install.node.is_file() or not install.entry.is_file():
        raise OpenClawUnavailable(f"The OpenClaw install in {home} is incomplete; reinstall it.")
    return install


@dataclass(frozen=True)
class ModelRuntime:
    """The hydration's ``runtime`` section (SPEC §8, §21), as the handler needs it."""

    model: str
    base_url: str = ""
    api_key: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    system_prompt: str = ""

    @classmethod
    def from_bundle(cls, bundle: dict) -> ModelRuntime:
        runtime = bundle.get("runtime") or {}
        model = (runtime.get("model") or "").strip()
        if not model:
            raise RuntimeError("The openclaw handler needs runtime.model (provider/model).")
        base_url = (runtime.get("base_url") or "").strip().rstrip("/")
        if not base_url and "/" not in model:
            raise RuntimeError(
                f"runtime.model {model!r} must be OpenClaw's provider/model reference "
                "(or set runtime.base_url for an OpenAI-compatible endpoint)."
            )
        return cls(
            model=model,
            base_url=base_url,
            api_key=runtime.get("api_key") or "",
            temperature=runtime.get("temperature"),
            max_tokens=runtime.get("max_tokens"),
            timeout_seconds=float(runtime.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS),
            system_prompt=runtime.get("system_prompt") or "",
        )

    @property
    def model_ref(self) -> str:
        """OpenClaw's ``provider/model``: with a base_url the model goes to the endpoint as
        given (an OpenRouter-style name keeps its slash) under the custom provider."""
        return f"{CUSTOM_PROVIDER}/{self.model}" if self.base_url else self.model

    @property
    def key_env(self) -> str:
        if self.base_url:
            return KEY_ENV
        provider = self.model.split("/", 1)[0]
        return "".join(c if c.isalnum() else "_" for c in provider).upper() + "_API_KEY"


@dataclass(frozen=True)
class Layout:
    data_dir: Path

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "openclaw"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "openclaw.json"

    @property
    def workspace(self) -> Path:
        return self.state_dir / "workspace"

    @property
    def home(self) -> Path:
        return self.state_dir / "home"

    @property
    def skills_link(self) -> Path:
        return self.workspace / "skills"

    @property
    def scratch(self) -> Path:
        """The worker's scratch space (never archived): message files for the CLI."""
        return self.data_dir / ".af-tmp"


def build_config(layout: Layout, runtime: ModelRuntime, *, gateway_port: int | None) -> dict:
    """OpenClaw's config for this runtime. It holds no secret: the key is a SecretRef to an
    environment variable, the gateway token comes from ``OPENCLAW_GATEWAY_TOKEN``."""
    params: dict = {}
    if runtime.temperature is not None:
        params["temperature"] = runtime.temperature
    if runtime.max_tokens:
        params["maxTokens"] = runtime.max_tokens
    config: dict = {
        "agents": {
            "defaults": {
                "model": {"primary": runtime.model_ref},
                "workspace": str(layout.workspace),
                # The worker manages the workspace files (persona, skills), not a ritual.
                "skipBootstrap": True,
                "timeoutSeconds": int(runtime.timeout_seconds),
                **({"models": {runtime.model_ref: {"params": params}}} if params else {}),
            }
        },
        "skills": {"load": {"allowSymlinkTargets": [str(layout.data_dir / "skills")]}},
        # In the worker's scratch space (never archived), not a /tmp file shared by all.
        "logging": {"file": str(layout.scratch / "openclaw.log")},
    }
    if runtime.base_url:
        model_entry: dict = {"id": runtime.model, "name": runtime.model, "input": ["text"]}
        if runtime.max_tokens:
            model_entry["maxTokens"] = runtime.max_tokens
        provider: dict = {
            "baseUrl": runtime.base_url,
            "api": "openai-completions",
            "models": [model_entry],
            "timeoutSeconds": int(runtime.timeout_seconds),
        }
        if runtime.api_key:
            provider["apiKey"] = {"source": "env", "provider": "default", "id": KEY_ENV}
        config["models"] = {"mode": "merge", "providers": {CUSTOM_PROVIDER: provider}}
    if gateway_port is not None:
        config["gateway"] = {
            "mode": "local",
            "port": gateway_port,
            "bind": "loopback",
            "auth": {"mode": "token"},  # the token: OPENCLAW_GATEWAY_TOKEN, in memory only
            "http": {"endpoints": {"responses": {"enabled": True}}},
        }
    return config


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one rename; an unchanged file is not touched (a running gateway
    watches its config and would reload for nothing)."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)


def prepare(layout: Layout, runtime: ModelRuntime, *, gateway_port: int | None = None) -> None:
    """Write the config, the persona file and the skills link before OpenClaw starts."""
    for directory in (layout.workspace, layout.home, layout.scratch):
        directory.mkdir(parents=True, exist_ok=True)
    config = build_config(layout, runtime, gateway_port=gateway_port)
    _write_atomically(layout.config_path, json.dumps(config, indent=2) + "\n")
    if runtime.system_prompt:
        # The operator's prompt is the agent's persona; rewritten each turn so an edit in
        # the admin wins over an older copy restored from a snapshot.
        _write_atomically(layout.workspace / PERSONA_FILE, runtime.system_prompt.rstrip() + "\n")
    link_skills(layout)


def link_skills(layout: Layout) -> None:
    """``<workspace>/skills`` → the materialised global skills (relative, so it survives the
    data dir moving). A real directory there (an agent's own skills) is left alone."""
    link = layout.skills_link
    target = os.path.relpath(layout.data_dir / "skills", link.parent)
    if link.is_symlink():
        if os.readlink(link) == target:
            return
        link.unlink()
    elif link.exists():
        return
    link.symlink_to(target, target_is_directory=True)


def child_env(install: Install, layout: Layout, runtime: ModelRuntime, **extra: str) -> dict:
    """The OpenClaw process's whole environment: its paths, the model key, nothing else of
    the worker's (no worker token, no AGENT_FACTORY_* setting)."""
    env = {
        "PATH": os.pathsep.join(
            [str(install.node.parent), os.environ.get("PATH", "/usr/bin:/bin")]
        ),
        "HOME": str(layout.home),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TZ": os.environ.get("TZ", "UTC"),
        "OPENCLAW_STATE_DIR": str(layout.state_dir),
        "OPENCLAW_CONFIG_PATH": str(layout.config_path),
        # Never fetch helper binaries at run time: the image holds what the agent may use.
        "OPENCLAW_OFFLINE": "1",
        "NO_COLOR": "1",
    }
    if runtime.api_key:
        env[runtime.key_env] = runtime.api_key
    env.update(extra)
    return env


def scrub(text: str, *secrets: str) -> str:
    """``text`` with every non-empty secret replaced: error text goes to the server."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text
