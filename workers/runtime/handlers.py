"""Job handlers: turn a hydrated job into the reply text.

``AGENT_FACTORY_WORKER_HANDLER`` names a built-in (``echo``, ``http``, ``openclaw``) or a
dotted path to a callable ``handler(context) -> str``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import requests

from workers.runtime.openclaw import openclaw


@dataclass(frozen=True)
class JobContext:
    job: dict
    bundle: dict
    data_dir: Path

    @property
    def text(self) -> str:
        return (self.job.get("payload") or {}).get("message_text") or ""


def echo(context: JobContext) -> str:
    """Reply with the user's text; keep a transcript in the workspace (so snapshots carry
    state from one worker to the next, as a real agent's workspace would)."""
    workspace = context.data_dir / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    with open(workspace / "transcript.txt", "a", encoding="utf-8") as handle:
        handle.write(context.text.replace("\n", " ") + "\n")
    return context.text or "(empty message)"


def http_forward(context: JobContext) -> str:
    """Forward the job to an HTTP endpoint or an OpenClaw gateway and return its reply.

    POSTs ``{"job", "conversation", "bridge", "workspace_dir", "skills_dir"}`` to
    ``AGENT_FACTORY_HANDLER_URL`` (falling back to ``OPENCLAW_GATEWAY_URL``) with
    ``OPENCLAW_GATEWAY_TOKEN`` as a bearer token when set; the endpoint answers
    ``{"reply": "..."}``. The bot token is never forwarded.
    """
    url = os.environ.get("AGENT_FACTORY_HANDLER_URL") or os.environ.get("OPENCLAW_GATEWAY_URL")
    if not url:
        raise RuntimeError(
            "The http handler needs AGENT_FACTORY_HANDLER_URL or OPENCLAW_GATEWAY_URL."
        )
    headers = {}
    if os.environ.get("OPENCLAW_GATEWAY_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['OPENCLAW_GATEWAY_TOKEN']}"
    timeout = float(os.environ.get("OPENCLAW_TIMEOUT_MS", "300000")) / 1000
    body = {
        "job": context.job,
        "conversation": context.bundle.get("conversation"),
        "bridge": context.bundle.get("bridge"),
        "workspace_dir": str(context.data_dir / "workspace"),
        "skills_dir": str(context.data_dir / "skills"),
    }
    response = requests.post(url, json=body, headers=headers, timeout=(5, timeout))
    if response.status_code != 200:
        raise RuntimeError(f"Handler endpoint answered {response.status_code}.")
    reply = response.json().get("reply")
    if not isinstance(reply, str):
        raise RuntimeError("Handler endpoint answered without a 'reply' string.")
    return reply


BUILT_INS = {"echo": echo, "http": http_forward, "openclaw": openclaw}


def import_string(dotted_path: str):
    """The attribute named by ``package.module.attribute`` (ImportError when there is none)."""
    module_path, _, attribute = dotted_path.rpartition(".")
    if not module_path:
        raise ImportError(f"{dotted_path!r} is not a dotted path")
    module = importlib.import_module(module_path)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ImportError(f"module {module_path!r} has no attribute {attribute!r}") from None


def load_handler(name: str | None):
    name = (name or "echo").strip()
    if name in BUILT_INS:
        return BUILT_INS[name]
    try:
        handler = import_string(name)
    except ImportError as exc:
        raise RuntimeError(f"Unknown handler '{name}': {exc}") from None
    if not callable(handler):
        raise RuntimeError(f"Handler '{name}' is not callable.")
    return handler
