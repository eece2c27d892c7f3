"""The JSON request handler of tools/serve.py and tools/fake_teacher.py: the standard library
only, so the fake teacher starts without importing torch."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


class JSONHandler(BaseHTTPRequestHandler):
    """A request handler that answers in JSON (this server's and tools/fake_teacher.py's)."""

    def send_json(self, code: int, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
