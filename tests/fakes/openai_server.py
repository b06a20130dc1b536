"""The one fake OpenAI-compatible server on 127.0.0.1, for the LLM handler and OpenClaw tests
(no internet, ever).

    with FakeOpenAI(reply="hello", delay=0) as fake:
        fake.base_url            # http://127.0.0.1:<port>/v1
        ...                      # point a handler at it
        fake.requests            # what it was sent: [{"path", "headers", "body"}]

Serves ``POST /v1/chat/completions`` (non-streaming, and SSE when the body says
``"stream": true``: the usage in a chunk of its own when ``stream_options.include_usage``
asks for it, as OpenAI does, else in the last chunk) and ``GET /v1/models``. Options:
``status`` makes every completion answer that HTTP status (a refusing endpoint; it may be
changed while running), ``fail_first=N`` answers only the first N completions with
``fail_status`` (429 or 500, …),
``retry_after`` sets that answer's Retry-After header, ``reply`` may be a callable
``reply(body) -> str`` (e.g. to answer from the conversation it was sent), ``usage`` sets
the reported token counts (``{"prompt_tokens", "completion_tokens"}`` and optional ``cost``),
``delay`` pauses before every answer. ``fake.dead()`` stops answering (a dead endpoint).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.fakes.http import send_json

PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7


class FakeOpenAI:
    def __init__(
        self,
        reply="Hello from the fake model.",
        *,
        delay: float = 0,
        status: int = 200,
        fail_first: int = 0,
        fail_status: int = 500,
        retry_after: float | None = None,
        usage: dict | None = None,
        model: str | None = None,
    ):
        self.reply = reply
        self.delay = delay
        self.status = status
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.usage = usage or {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
        }
        self.model = model
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        self._bound_port: int | None = None

    # Lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> FakeOpenAI:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._bound_port = self._server.server_address[1]  # kept after dead()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.dead()

    def dead(self) -> None:
        """Stop answering: further calls are refused like a closed port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("FakeOpenAI is not running (use it as a context manager).")
        return self._bound_port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def completions(self) -> list[dict]:
        """The bodies of the chat-completions requests, in order."""
        return [r["body"] for r in self.requests if r["path"].endswith("/chat/completions")]

    @property
    def headers(self) -> list[dict]:
        """The headers of every request, in order."""
        return [r["headers"] for r in self.requests]

    # Serving -----------------------------------------------------------------------------
    def _answer(self, body: dict) -> tuple[int, dict, dict | None]:
        """(status, headers, json body or None for streaming) for one completion."""
        if self.status != 200:
            return self.status, {}, {"error": {"message": "fake failure"}}
        with self._lock:
            failing = self.fail_first > 0
            if failing:
                self.fail_first -= 1
        if failing:
            headers = {}
            if self.retry_after is not None:
                headers["Retry-After"] = str(self.retry_after)
            error = {"error": {"message": f"fake failure {self.fail_status}", "type": "fake"}}
            return self.fail_status, headers, error
        text = self.reply(body) if callable(self.reply) else self.reply
        return 200, {}, {"text": text}

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (~40 ms)

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                fake._record(self, None)
                if self.path.rstrip("/").endswith("/models"):
                    model = fake.model or "fake-model"
                    listed = {"id": model, "object": "model", "owned_by": "fake"}
                    send_json(self, 200, {"object": "list", "data": [listed]})
                else:
                    send_json(self, 404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                fake._record(self, body)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    send_json(self, 404, {"error": {"message": "not found"}})
                    return
                if fake.delay:
                    time.sleep(fake.delay)
                status, headers, answer = fake._answer(body)
                if status != 200:
                    send_json(self, status, answer, headers)
                elif body.get("stream"):
                    self._stream(body, answer["text"])
                else:
                    send_json(self, 200, fake._completion(body, answer["text"]))

            def _stream(self, body: dict, text: str):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                for chunk in fake._chunks(body, text):
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        return Handler

    def _record(self, handler: BaseHTTPRequestHandler, body) -> None:
        with self._lock:
            self.requests.append(
                {"path": handler.path, "headers": dict(handler.headers.items()), "body": body}
            )

    def _usage(self) -> dict:
        usage = dict(self.usage)
        usage.setdefault(
            "total_tokens", usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
        )
        return usage

    def _completion(self, body: dict, text: str) -> dict:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self._model(body),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(),
        }

    def _model(self, body: dict) -> str:
        return self.model or body.get("model") or "fake-model"

    def _chunks(self, body: dict, text: str) -> list[dict]:
        """The SSE chunks of one streamed answer: role, text, finish, and the usage."""
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self._model(body),
        }
        finish = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        chunks = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {**base, "choices": [{"index": 0, "delta": {"content": text}}]},
            finish,
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": self._usage()})
        else:
            finish["usage"] = self._usage()
        return chunks
