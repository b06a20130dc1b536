"""The ``llm`` handler (SPEC §21): one OpenAI-compatible chat-completions call per job.

``POST {base_url}/chat/completions`` with the system prompt, the hydrated history and the
message (attachments described as text), ``model`` sent as given, ``temperature`` and
``max_tokens`` when set. Works with OpenAI, OpenRouter, Ollama, vLLM and LiteLLM.

429, 5xx, timeouts and network errors are retried with backoff (honouring ``Retry-After``)
inside the job: at most ``MAX_TRIES`` calls and ``BUDGET_FACTOR`` × ``timeout_seconds`` in
all, so the worker's heartbeat keeps the lease meanwhile. Past that, or on any other answer,
a ``HandlerError`` with a short clear text (never the key; at most an excerpt of the
endpoint's error) fails the job and the server retries it later (SPEC §6.3).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import requests

from workers.runtime.handlers import HandlerError, HandlerResult, JobContext

DEFAULT_BASE_URL = "https://api.openai.com/v1"
MAX_TRIES = 4
BACKOFF_SECONDS = 1.0  # 1 s, 2 s, 4 s between tries
MAX_RETRY_AFTER = 30.0
BUDGET_FACTOR = 2
EXCERPT_CHARS = 200
HISTORY_ROLES = ("system", "user", "assistant")


@dataclass
class ChatCall:
    """One job's chat call with its retry policy (tests shorten the waits)."""

    runtime: dict
    session: requests.Session = field(default_factory=requests.Session)
    max_tries: int = MAX_TRIES
    backoff: float = BACKOFF_SECONDS
    sleep: object = time.sleep

    @property
    def url(self) -> str:
        base = (self.runtime.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        return f"{base}/chat/completions"

    def headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.runtime.get("api_key"):
            headers["Authorization"] = f"Bearer {self.runtime['api_key']}"
        return headers

    def body(self, messages: list[dict]) -> dict:
        body = {"model": self.runtime.get("model") or "", "messages": messages, "stream": False}
        if self.runtime.get("temperature") is not None:
            body["temperature"] = self.runtime["temperature"]
        if self.runtime.get("max_tokens"):
            body["max_tokens"] = self.runtime["max_tokens"]
        return body

    def run(self, messages: list[dict]) -> dict:
        """The endpoint's JSON answer; HandlerError when it never gives one."""
        timeout = float(self.runtime.get("timeout_seconds") or 120)
        deadline = time.monotonic() + timeout * BUDGET_FACTOR
        body = self.body(messages)
        problem = "no answer"
        for attempt in range(1, self.max_tries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            retry_after = None
            try:
                response = self.session.post(
                    self.url,
                    json=body,
                    headers=self.headers(),
                    timeout=(min(10.0, remaining), min(timeout, remaining)),
                )
            except requests.Timeout:
                problem = f"no answer within {timeout:g} s"
            except requests.RequestException as exc:
                problem = f"unreachable ({type(exc).__name__})"
            else:
                if response.status_code == 200:
                    return self._json(response)
                problem = f"answered {response.status_code}{self._excerpt(response)}"
                if response.status_code != 429 and response.status_code < 500:
                    raise HandlerError(f"The model endpoint {problem}.", usage=self.no_usage())
                retry_after = _retry_after(response)
            if attempt == self.max_tries:
                break
            wait = retry_after if retry_after is not None else self.backoff * 2 ** (attempt - 1)
            if time.monotonic() + wait >= deadline:
                break
            self.sleep(wait)
        raise HandlerError(
            f"The model endpoint {problem} (gave up after {attempt} tries).",
            usage=self.no_usage(),
        )

    def _json(self, response: requests.Response) -> dict:
        try:
            data = response.json()
        except ValueError:
            raise HandlerError(
                "The model endpoint answered 200 with a body that is not JSON.",
                usage=self.no_usage(),
            ) from None
        if not isinstance(data, dict):
            raise HandlerError("The model endpoint answered 200 with no JSON object.")
        return data

    def _excerpt(self, response: requests.Response) -> str:
        """A short excerpt of the endpoint's error, the key taken out if it echoes it."""
        try:
            data = response.json()
            error = data.get("error") if isinstance(data, dict) else None
            text = error.get("message") if isinstance(error, dict) else error or data
            text = str(text)
        except ValueError:
            text = response.text or ""
        text = " ".join(text.split())[:EXCERPT_CHARS]
        key = self.runtime.get("api_key")
        if key:
            text = text.replace(key, "[redacted]")
        return f": {text}" if text else ""

    def no_usage(self) -> dict:
        return {"input_tokens": 0, "output_tokens": 0, "model": self.runtime.get("model") or ""}


def _retry_after(response: requests.Response) -> float | None:
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(response.headers.get("Retry-After", ""))))
    except ValueError:
        return None


def describe_attachment(attachment: dict) -> str:
    """An attachment as a line of text: the model cannot fetch the worker's download URL."""
    details = [attachment.get("mime_type") or "", _size(attachment.get("size_bytes"))]
    details = ", ".join(d for d in details if d)
    name = attachment.get("file_name") or "unnamed"
    return f"[attachment: {attachment.get('kind', 'file')} '{name}'" + (
        f" ({details})]" if details else "]"
    )


def _size(size) -> str:
    return f"{size} bytes" if isinstance(size, int) else ""


def build_messages(context: JobContext) -> list[dict]:
    """System prompt, then the history (user/assistant/system entries), then the message."""
    messages = []
    prompt = (context.runtime.get("system_prompt") or "").strip()
    if prompt:
        messages.append({"role": "system", "content": prompt})
    for entry in context.history:
        if entry.get("role") in HISTORY_ROLES and entry.get("content"):
            messages.append({"role": entry["role"], "content": entry["content"]})
    text = context.text
    lines = [describe_attachment(a) for a in context.attachments]
    content = "\n".join([text, *lines] if text else lines) or "(empty message)"
    messages.append({"role": "user", "content": content})
    return messages


def reply_text(data: dict) -> str:
    """The first choice's text (a string, or a list of text parts)."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    message = choices[0].get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        content = "".join(
            part.get("text", "") for part in content if isinstance(part, dict)
        )
    return content.strip() if isinstance(content, str) else ""


def usage_of(data: dict, model: str) -> dict:
    """The job's usage from the answer's ``usage`` (OpenRouter adds ``cost`` in USD)."""
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    result = {
        "input_tokens": _count(usage.get("prompt_tokens", usage.get("input_tokens"))),
        "output_tokens": _count(usage.get("completion_tokens", usage.get("output_tokens"))),
        "model": str(data.get("model") or model or "")[:200],
    }
    cost = usage.get("cost")
    if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost >= 0:
        result["cost_usd"] = round(float(cost), 6)
    return result


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def llm_handler(context: JobContext, *, call: ChatCall | None = None) -> HandlerResult:
    runtime = context.runtime
    if not runtime.get("model"):
        raise HandlerError("The llm handler needs a model: set it in the agent's runtime.")
    call = call or ChatCall(runtime)
    data = call.run(build_messages(context))
    usage = usage_of(data, runtime.get("model"))
    text = reply_text(data)
    if not text:
        raise HandlerError("The model answered with no text.", usage=usage)
    return HandlerResult(text=text, usage=usage)
