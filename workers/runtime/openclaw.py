"""The ``openclaw`` handler: a turn of a real OpenClaw agent (SPEC §21).

Session id = conversation id; OpenClaw's state (sessions, memory, workspace) lives in
``<data dir>/openclaw`` (see ``openclaw_setup``). Two ways to run a turn, chosen by
``AGENT_FACTORY_OPENCLAW_MODE``:

- ``gateway`` (the default): the worker's first turn runs embedded (below); right after it
  the worker starts one OpenClaw gateway on loopback in the background and keeps it warm;
  every later turn is a ``POST /v1/responses`` to it with the session key
  ``agent:main:explicit:<conversation id>``. Measured with an instant fake model
  (``bench/agent_turn.py``): about 1 s a turn against about 11 s for an embedded turn, whose
  every turn boots Node and OpenClaw again. Starting the gateway takes about 25 s, once per
  worker (again when the agent's runtime settings change), while nobody waits — unless the
  next message comes sooner. The gateway is stopped before every snapshot, so the archive
  holds closed SQLite databases.
- ``embedded``: ``openclaw agent --local --session-id <conversation> --json`` per turn, one
  process each; its JSON carries media paths and OpenClaw's own cost figure as well.

Both use the same session key, so a snapshot written in one mode serves the other. The reply
is an :class:`AgentReply` — the text, with ``media`` (paths) and ``usage``
(``{input_tokens, output_tokens, cost_usd?, model}``) attached.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time

import requests

from workers.runtime.openclaw_setup import (
    GATEWAY_TOKEN_ENV,
    Install,
    Layout,
    ModelRuntime,
    OpenClawUnavailable,
    child_env,
    find_install,
    prepare,
    scrub,
)

logger = logging.getLogger("agent_factory.worker")

MODE_ENV = "AGENT_FACTORY_OPENCLAW_MODE"
MODES = ("gateway", "embedded")
GATEWAY_READY_SECONDS = 180
SESSION_AGENT = "main"


class AgentReply(str):
    """The reply text, carrying what else the turn produced (media paths, token usage)."""

    media: tuple[str, ...] = ()
    usage: dict | None = None

    @classmethod
    def of(cls, text: str, media=(), usage: dict | None = None) -> AgentReply:
        reply = cls(text)
        reply.media = tuple(media)
        reply.usage = usage
        return reply


def session_key(conversation_id: str) -> str:
    """The key ``agent --local --session-id <id>`` files its session under."""
    return f"agent:{SESSION_AGENT}:explicit:{conversation_id}"


def _usage(input_tokens, output_tokens, model: str, cost=None) -> dict:
    usage = {
        "input_tokens": int(input_tokens or 0),
        "output_tokens": int(output_tokens or 0),
        "model": model,
    }
    if isinstance(cost, int | float) and cost > 0:
        usage["cost_usd"] = float(cost)
    return usage


def _die_with_parent() -> None:  # runs in the child before exec (Linux)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: S110 (best effort: other systems rely on stop()/atexit)
        pass


# Embedded --------------------------------------------------------------------------------
def run_embedded(install: Install, layout: Layout, runtime: ModelRuntime, conversation_id: str,
                 text: str) -> AgentReply:
    prepare(layout, runtime)
    with tempfile.NamedTemporaryFile(
        "w", dir=layout.scratch, prefix="message-", suffix=".txt", encoding="utf-8"
    ) as message:
        message.write(text)
        message.flush()
        command = install.command(
            "agent", "--local", "--session-id", conversation_id, "--message-file", message.name,
            "--json", "--timeout", str(int(runtime.timeout_seconds)),
        )  # fmt: skip
        try:
            done = subprocess.run(
                command, env=child_env(install, layout, runtime), cwd=layout.workspace,
                capture_output=True, text=True, timeout=runtime.timeout_seconds + 60,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"OpenClaw gave no answer in {runtime.timeout_seconds:.0f} s.")
    try:
        result = json.loads(done.stdout)
    except ValueError:
        result = None
    if done.returncode != 0 or not isinstance(result, dict):
        detail = _error_text(result) or done.stderr.strip().splitlines()[-1:] or ["no output"]
        detail = detail if isinstance(detail, str) else detail[0]
        raise RuntimeError(
            f"OpenClaw failed (exit {done.returncode}): {scrub(detail, runtime.api_key)[:500]}"
        )
    return parse_agent_json(result, runtime)


def _error_text(result) -> str:
    if not isinstance(result, dict):
        return ""
    error = result.get("error") or (result.get("meta") or {}).get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or "")


def parse_agent_json(result: dict, runtime: ModelRuntime) -> AgentReply:
    """Text, media and usage from ``openclaw agent --json`` (``payloads`` and
    ``meta.agentMeta``)."""
    payloads = result.get("payloads") or []
    texts = [p["text"] for p in payloads if isinstance(p, dict) and p.get("text")]
    media = []
    for payload in payloads:
        if not isinstance(payload, dict):
            continue
        for key in ("mediaUrl", "mediaUrls"):
            value = payload.get(key)
            media.extend([value] if isinstance(value, str) else value or [])
    meta = (result.get("meta") or {}).get("agentMeta") or {}
    usage = meta.get("usage") or {}
    model = "/".join(filter(None, (meta.get("provider"), meta.get("model")))) or runtime.model_ref
    return AgentReply.of(
        "\n\n".join(texts),
        media=media,
        usage=_usage(usage.get("input"), usage.get("output"), model,
                     (usage.get("cost") or {}).get("total")),
    )  # fmt: skip


# Gateway ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Gateway:
    """One warm OpenClaw gateway on loopback, for one data dir and one runtime setting."""

    def __init__(self, install: Install, layout: Layout, runtime: ModelRuntime):
        self.install, self.layout, self.runtime = install, layout, runtime
        self.port = _free_port()
        self.token = secrets.token_urlsafe(32)  # in memory and in the child's env only
        self.process: subprocess.Popen | None = None
        self.launched = 0.0
        self.log_path = layout.scratch / "gateway.log"

    def launch(self) -> None:
        """Start the process. From the thread that stays (the worker's): the child's
        parent-death signal fires when the thread that started it ends."""
        prepare(self.layout, self.runtime, gateway_port=self.port)
        env = child_env(self.install, self.layout, self.runtime, **{GATEWAY_TOKEN_ENV: self.token})
        self.launched = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.install.command("gateway", "run", "--port", str(self.port)),
                env=env, cwd=self.layout.workspace, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            )  # fmt: skip

    def wait_ready(self) -> None:
        started = self.launched
        deadline = started + GATEWAY_READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"The OpenClaw gateway exited ({self.process.returncode}) while starting."
                )
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    logger.info("OpenClaw gateway ready in %.1f s.", time.monotonic() - started)
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"The OpenClaw gateway was not ready in {GATEWAY_READY_SECONDS} s.")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def turn(self, conversation_id: str, text: str) -> AgentReply:
        prepare(self.layout, self.runtime, gateway_port=self.port)  # persona edits, skills
        try:
            response = requests.post(
                f"{self.url}/v1/responses",
                json={"model": "openclaw/default", "input": text},
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "x-openclaw-session-key": session_key(conversation_id),
                },
                timeout=(5, self.runtime.timeout_seconds + 30),
            )
        except requests.RequestException as exc:
            # The turn may still be running in there: stop the gateway, so it cannot finish
            # (and write to the session) behind the retry's back; the next turn restarts it.
            self.stop()
            raise RuntimeError(
                f"The OpenClaw gateway gave no answer ({type(exc).__name__}) within "
                f"{self.runtime.timeout_seconds + 30:.0f} s; is the model endpoint up?"
            )
        if response.status_code != 200:
            try:
                error = response.json().get("error") or {}
                detail = ": ".join(filter(None, (error.get("code"), error.get("message"))))
            except (ValueError, AttributeError):
                detail = ""
            detail = scrub(detail or response.text, self.runtime.api_key, self.token)
            raise RuntimeError(f"The OpenClaw gateway answered {response.status_code}: "
                               f"{detail[:500]}")  # fmt: skip
        return parse_responses_json(response.json(), self.runtime)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def parse_responses_json(result: dict, runtime: ModelRuntime) -> AgentReply:
    """Text and usage from the gateway's OpenResponses answer (it reports no media)."""
    if result.get("status") not in (None, "completed"):
        message = (result.get("error") or {}).get("message") or result.get("status")
        raise RuntimeError(f"The OpenClaw turn ended {scrub(str(message), runtime.api_key)}.")
    texts = [
        part.get("text", "")
        for item in result.get("output") or []
        if item.get("type") == "message"
        for part in item.get("content") or []
        if part.get("type") == "output_text"
    ]
    usage = result.get("usage") or {}
    return AgentReply.of(
        "\n\n".join(t for t in texts if t),
        usage=_usage(usage.get("input_tokens"), usage.get("output_tokens"), runtime.model_ref),
    )


class GatewayKeeper:
    """The worker's one gateway. The first turn (or the first after the data dir or the
    runtime settings changed) runs embedded, so the user does not wait for a gateway to
    boot; a gateway then starts in the background and serves the next turns (a turn that
    arrives while it is still starting waits for it). Stopped before every snapshot and at
    exit."""

    def __init__(self):
        self.gateway: Gateway | None = None
        self.signature: str | None = None
        self.starting: threading.Thread | None = None
        self.lock = threading.Lock()
        atexit.register(self.stop)

    @staticmethod
    def _signature(layout: Layout, runtime: ModelRuntime) -> str:
        # The key only as a hash (in memory): a rotated key restarts the gateway.
        fields = json.dumps([str(layout.data_dir), repr(runtime)], sort_keys=True)
        return hashlib.sha256(fields.encode()).hexdigest()

    def turn(self, install, layout, runtime, conversation_id: str, text: str) -> AgentReply:
        with self.lock:
            signature = self._signature(layout, runtime)
            self._settle()
            if self.gateway is not None and self.gateway.alive() and signature == self.signature:
                return self.gateway.turn(conversation_id, text)
            self._stop()  # OpenClaw's state lock: one owner of the state dir at a time
            reply = run_embedded(install, layout, runtime, conversation_id, text)
            self._start_in_background(Gateway(install, layout, runtime), signature)
            return reply

    def _start_in_background(self, gateway: Gateway, signature: str) -> None:
        gateway.launch()

        def start():
            try:
                gateway.wait_ready()
            except Exception as exc:  # the next turn runs embedded and tries again
                logger.warning("OpenClaw gateway not started: %s", exc)
                gateway.stop()

        self.gateway, self.signature = gateway, signature
        self.starting = threading.Thread(target=start, name="openclaw-gateway", daemon=True)
        self.starting.start()

    def _settle(self) -> None:
        """Wait for a gateway still starting (it owns the state dir until it is up)."""
        if self.starting is not None:
            self.starting.join()
            self.starting = None

    def wait_ready(self) -> bool:
        """Wait for a gateway still starting; whether one is up now."""
        with self.lock:
            self._settle()
            return self.gateway is not None and self.gateway.alive()

    def _stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        self.gateway = self.signature = None

    def stop(self) -> None:
        with self.lock:
            if self.gateway is not None:
                self.gateway.stop()  # one still booting too: a snapshot need not wait for it
            self._settle()
            self._stop()


KEEPER = GatewayKeeper()


def mode() -> str:
    chosen = (os.environ.get(MODE_ENV) or "gateway").strip()
    if chosen not in MODES:
        raise RuntimeError(f"{MODE_ENV} must be one of {', '.join(MODES)}, not {chosen!r}.")
    return chosen


def openclaw(context) -> AgentReply:
    """The ``openclaw`` handler (``workers.runtime.handlers``)."""
    try:
        install = find_install()
    except OpenClawUnavailable as exc:
        raise RuntimeError(str(exc)) from None
    runtime = ModelRuntime.from_bundle(context.bundle)
    layout = Layout(context.data_dir)
    conversation_id = context.job["conversation_id"]
    text = context.text or "(empty message)"
    if mode() == "embedded":
        reply = run_embedded(install, layout, runtime, conversation_id, text)
    else:
        reply = KEEPER.turn(install, layout, runtime, conversation_id, text)
    if not reply.strip() and not reply.media:
        # Nothing to send (Telegram refuses an empty message): a failure the queue retries
        # and, in the end, dead-letters — never a silent "done".
        raise RuntimeError("OpenClaw finished the turn without a reply.")
    return reply


# Called by the runner before it archives the data dir (or hands it to another conversation):
# a running gateway holds open SQLite databases and the state lock.
openclaw.before_snapshot = KEEPER.stop
