"""A host app's webhook endpoint for the tests: an http.server on a loopback port chosen by
the OS, in a thread, that records each request and answers the next scripted status."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agents.consumer_api.webhook_signature import HEADER, verify


class Receiver:
    def __init__(self, statuses=None, default_status: int = 200):
        self.statuses = list(statuses or [])
        self.default_status = default_status
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else receiver.default_status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def events(self, secret: str) -> list[dict]:
        """The bodies received, each checked against its signature (fails the test if not)."""
        out = []
        for request in self.requests:
            header = request["headers"].get(HEADER)
            assert verify(secret, request["body"], header), "bad or missing signature"
            out.append(json.loads(request["body"]))
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
