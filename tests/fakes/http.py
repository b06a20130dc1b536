"""What the loopback fakes (http.server handlers) share."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


def send_json(
    handler: BaseHTTPRequestHandler, status: int, payload, headers: dict | None = None
) -> None:
    """Answer ``payload`` as JSON, with its Content-Length (so keep-alive clients know where
    it ends) and any extra ``headers``."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)
