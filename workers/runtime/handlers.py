"""Job handlers: turn a hydrated job into the reply.

The interface (every handler, built-in or a dotted path importable in the worker):

    handler(context: JobContext) -> str | HandlerResult

- ``context.text``: the user's message; ``context.history``: the conversation's last
  entries (``[{"role", "content", "at"}]``, oldest first, this message not included);
  ``context.runtime``: the agent's runtime settings from the hydration (SPEC §21) with
  exactly the keys ``handler, model, base_url, api_key, temperature, max_tokens,
  timeout_seconds, system_prompt``; ``context.data_dir``: the worker's data dir (snapshotted).
- Return the reply text, or ``HandlerResult(text, usage, media)`` with usage
  ``{"input_tokens", "output_tokens", "cost_usd"?, "model"}`` (sent on complete) and media
  ``[ReplyFile(kind, path)]``: files on disk (photo ≤ 10 MB, document/audio/voice/video
  ≤ 50 MB) the worker uploads and the server sends after the text, or under it as the
  caption when the text is short (SPEC §22). ``context.client`` is the worker API client
  (``download_to`` fetches an attachment's ``download_url``).
- Fail by raising; ``HandlerError(message, usage=...)`` carries a message that is safe to
  show in the admin and the usage of the failed attempt (sent on fail). The job is retried
  by the server (SPEC §6.3). Any other exception is reported as ``Type: message``.
- ``runtime["api_key"]`` is the model key: keep it in memory (or in the environment of a
  child process the handler starts); never log it, never write it under ``data_dir``, never
  put it in an error message. The worker redacts it from error texts as a last resort.

Which handler runs: ``AGENT_FACTORY_WORKER_HANDLER`` (or ``--handler``) when the worker is
started with one — it then runs every job — else the hydration's ``runtime.handler``.
Built-ins: ``echo``, ``llm`` (workers/runtime/llm.py), ``http``, ``openclaw``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import requests

from workers.runtime.archive import work_dir


@dataclass(frozen=True)
class JobContext:
    job: dict
    bundle: dict
    data_dir: Path
    client: object | None = None

    @property
    def text(self) -> str:
        return (self.job.get("payload") or {}).get("message_text") or ""

    @property
    def runtime(self) -> dict:
        return self.bundle.get("runtime") or {}

    @property
    def history(self) -> list[dict]:
        return (self.bundle.get("conversation") or {}).get("history") or []

    @property
    def attachments(self) -> list[dict]:
        """The message's attachments as hydrated (kind, file name, mime type, size, …)."""
        return (self.bundle.get("payload") or self.job.get("payload") or {}).get(
            "attachments"
        ) or []


@dataclass(frozen=True)
class ReplyFile:
    """A file of the reply: ``kind`` is photo, document, audio, voice or video."""

    kind: str
    path: Path
    file_name: str = ""


@dataclass(frozen=True)
class HandlerResult:
    text: str
    usage: dict | None = None
    media: tuple[ReplyFile, ...] = ()


class HandlerError(RuntimeError):
    """A handler failure with a message fit for the admin, and the attempt's usage."""

    def __init__(self, message: str, *, usage: dict | None = None):
        super().__init__(message)
        self.usage = usage


# What the echo handler fetches back of an attachment (Telegram's own download limit).
ECHO_MAX_BYTES = 20 * 1024 * 1024


def echo(context: JobContext) -> str | HandlerResult:
    """Reply with the user's text and send back the files they sent (each as the kind it
    came as); keep a transcript in the workspace (so snapshots carry state from one worker
    to the next, as a real agent's workspace would)."""
    workspace = context.data_dir / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    with open(workspace / "transcript.txt", "a", encoding="utf-8") as handle:
        handle.write(context.text.replace("\n", " ") + "\n")
    # Fetched into the scratch dir (never snapshotted); the worker removes them once sent.
    scratch = work_dir(context.data_dir) / f"echo-{context.job.get('message_id')}"
    media = _echo_files(context, scratch)
    if media:
        return HandlerResult(text=context.text, media=media)
    return context.text or "(empty message)"


def _echo_files(context: JobContext, folder: Path) -> tuple[ReplyFile, ...]:
    if context.client is None:
        return ()
    files = []
    for index, attachment in enumerate(context.attachments):
        url = attachment.get("download_url")
        if attachment.get("status") != "ready" or not url:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        name = Path(str(attachment.get("file_name") or "")).name or f"file-{index}"
        path = folder / f"{index}-{name}"
        context.client.download_to(url, path, ECHO_MAX_BYTES)
        files.append(ReplyFile(kind=attachment.get("kind") or "document", path=path))
    return tuple(files)


def http_forward(context: JobContext) -> str | HandlerResult:
    """Forward the job to an HTTP endpoint and return its reply (SPEC §21 ``http``).

    POSTs ``{"job", "conversation", "runtime", "bridge", "workspace_dir", "skills_dir"}``
    (``runtime`` without the key) to the agent's ``runtime.base_url``, falling back to
    ``AGENT_FACTORY_HANDLER_URL`` / ``OPENCLAW_GATEWAY_URL``, with the model key (or
    ``OPENCLAW_GATEWAY_TOKEN``) as a bearer token when set. The endpoint answers
    ``{"reply": "..." | {"text": ...}, "usage"?: {...}}``. The bot token is never forwarded.
    """
    runtime = context.runtime
    url = (
        runtime.get("base_url")
        or os.environ.get("AGENT_FACTORY_HANDLER_URL")
        or os.environ.get("OPENCLAW_GATEWAY_URL")
    )
    if not url:
        raise RuntimeError(
            "The http handler needs the agent's base_url, AGENT_FACTORY_HANDLER_URL "
            "or OPENCLAW_GATEWAY_URL."
        )
    headers = {}
    token = runtime.get("api_key") or os.environ.get("OPENCLAW_GATEWAY_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    timeout = (
        runtime.get("timeout_seconds")
        or float(os.environ.get("OPENCLAW_TIMEOUT_MS", "300000")) / 1000
    )
    body = {
        "job": context.job,
        "conversation": context.bundle.get("conversation"),
        "runtime": {key: value for key, value in runtime.items() if key != "api_key"},
        "bridge": context.bundle.get("bridge"),
        "workspace_dir": str(context.data_dir / "workspace"),
        "skills_dir": str(context.data_dir / "skills"),
    }
    response = requests.post(url, json=body, headers=headers, timeout=(5, timeout))
    if response.status_code != 200:
        raise HandlerError(f"Handler endpoint answered {response.status_code}.")
    answer = response.json()
    reply = answer.get("reply") if isinstance(answer, dict) else None
    if isinstance(reply, dict):
        reply = reply.get("text")
    if not isinstance(reply, str):
        raise HandlerError("Handler endpoint answered without a 'reply' string.")
    usage = answer.get("usage")
    return HandlerResult(text=reply, usage=usage) if isinstance(usage, dict) else reply


# A dotted path string is imported on first use (a handler module may be heavy).
BUILT_INS = {
    "echo": echo,
    "llm": "workers.runtime.llm.llm_handler",
    "http": http_forward,
    "openclaw": "workers.runtime.openclaw.openclaw",
}


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
    if name in BUILT_INS and not isinstance(BUILT_INS[name], str):
        return BUILT_INS[name]
    name = BUILT_INS.get(name, name)
    try:
        handler = import_string(name)
    except ImportError as exc:
        raise RuntimeError(f"Unknown handler '{name}': {exc}") from None
    if not callable(handler):
        raise RuntimeError(f"Handler '{name}' is not callable.")
    return handler


def resolve_handler(handler, bundle: dict):
    """``handler`` (the worker's own) or, when None, the agent's ``runtime.handler``."""
    if handler is not None:
        return handler
    name = (bundle.get("runtime") or {}).get("handler") or "echo"
    try:
        return load_handler(name)
    except RuntimeError as exc:
        raise HandlerError(str(exc)) from None


def run_handler(handler, job: dict, bundle: dict, data_dir: Path, client=None) -> HandlerResult:
    """Run ``handler`` (the worker's own), or when None the agent's ``runtime.handler`` from
    the hydration; a str answer becomes a HandlerResult."""
    handler = resolve_handler(handler, bundle)
    result = handler(JobContext(job=job, bundle=bundle, data_dir=data_dir, client=client))
    if isinstance(result, HandlerResult):
        return result
    if not isinstance(result, str):
        raise HandlerError(f"The handler answered {type(result).__name__}, not text.")
    # A str subclass may carry the turn's usage (the openclaw handler's AgentReply).
    usage = getattr(result, "usage", None)
    return HandlerResult(text=str(result), usage=usage if isinstance(usage, dict) else None)


def secrets_of(bundle: dict) -> tuple[str, ...]:
    """The plaintext secrets of a hydration that must never appear in an error text."""
    runtime = bundle.get("runtime") or {}
    return tuple(v for v in (runtime.get("api_key"),) if isinstance(v, str) and len(v) >= 4)


def redact(text: str, secrets) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text
