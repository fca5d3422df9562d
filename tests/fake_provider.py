"""A local HTTP server standing in for an offline push provider: records requests, can fail on demand."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeProvider:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self.fail_next = 0  # answer this many requests with fail_status before succeeding
        self.fail_status = 503
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with provider._lock:
                    provider.attempts += 1
                    failing = provider.fail_next > 0
                    if failing:
                        provider.fail_next -= 1
                    else:
                        provider.received.append(body)
                status = provider.fail_status if failing else 200
                payload = json.dumps({"ok": not failing}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/push"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def for_user(self, user_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.received if user_id in r.get("userIDs", [])]

    def wait_for_user(self, user_id: str, msg_count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.for_user(user_id)
            if sum(len(r["msgs"]) for r in got) >= msg_count:
                return got
            time.sleep(0.1)
        return self.for_user(user_id)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
