"""A fake OpenAI-compatible chat-completions server on 127.0.0.1 for handler tests.

``with FakeOpenAI(reply="hi", delay=0) as fake:`` serves ``fake.base_url`` (``…/v1``) on a free
loopback port in a thread; every request body it was sent is kept in ``fake.requests`` (with
its headers in ``fake.headers``). It answers ``POST /v1/chat/completions`` non-streaming, or as
server-sent events when the body says ``"stream": true`` (with a usage chunk when
``stream_options.include_usage`` is set), and ``GET /v1/models``. ``reply`` may be a callable
``reply(body) -> str``; ``status`` makes every completion answer that HTTP status instead
(a dead or refusing endpoint). Nothing here reaches the internet.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7


class FakeOpenAI:
    def __init__(self, reply="Hello from the fake model.", delay: float = 0, status: int = 200):
        self.reply = reply
        self.delay = delay
        self.status = status
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # Context manager ---------------------------------------------------------------------
    def __enter__(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (~40 ms)

            def log_message(self, *_args):  # keep test output clean
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    fake._json(self, 200, {"object": "list", "data": [
                        {"id": "fake-model", "object": "model", "owned_by": "fake"}]})
                else:
                    fake._json(self, 404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                with fake._lock:
                    fake.requests.append(body)
                    fake.headers.append(dict(self.headers.items()))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    fake._json(self, 404, {"error": {"message": "not found"}})
                    return
                if fake.delay:
                    time.sleep(fake.delay)
                if fake.status != 200:
                    fake._json(self, fake.status, {"error": {"message": "fake failure"}})
                    return
                text = fake.reply(body) if callable(fake.reply) else fake.reply
                if body.get("stream"):
                    fake._stream(self, body, text)
                else:
                    fake._json(self, 200, fake._completion(body, text))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    # Answers -----------------------------------------------------------------------------
    @staticmethod
    def _usage() -> dict:
        return {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }

    def _completion(self, body: dict, text: str) -> dict:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }],
            "usage": self._usage(),
        }

    @staticmethod
    def _json(handler, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _stream(self, handler, body: dict, text: str) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
        }
        chunks = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {**base, "choices": [{"index": 0, "delta": {"content": text}}]},
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": self._usage()})
        for chunk in chunks:
            handler.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()
        handler.close_connection = True
