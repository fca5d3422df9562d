"""A small local HTTP server for the core SDK's web page and the package's own assets.

`/` is tests/interop/wasm/index.html; `/lib/*` and `/assets/*` come from the installed
@openim/wasm-client-sdk (its .wasm as application/wasm, which WebAssembly.instantiateStreaming
insists on). Answers are cross-origin isolated (COOP/COEP) so that the SDK's SQLite layer (absurd-sql)
gets SharedArrayBuffer, as the package's README asks of a page that hosts it.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

HERE = Path(__file__).resolve().parent
PAGE = HERE / "wasm" / "index.html"
TYPES = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript", ".html": "text/html"}


class _Handler(SimpleHTTPRequestHandler):
    sdk_dir: Path

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if clean in ("/", "/index.html"):
            return str(PAGE)
        for prefix in ("/lib/", "/assets/"):
            if clean.startswith(prefix):
                target = (self.sdk_dir / clean.lstrip("/")).resolve()
                if target.is_relative_to(self.sdk_dir):  # nothing outside the package
                    return str(target)
        return str(self.sdk_dir / "not-found")

    def guess_type(self, path: str | Any) -> str:
        return TYPES.get(Path(str(path)).suffix, "application/octet-stream")

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if code == HTTPStatus.NOT_FOUND:
            self.log_message("404 %s", self.path)
        super().send_error(code, message, explain)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.server.log_path is not None:  # type: ignore[attr-defined]
            with open(self.server.log_path, "a") as log:  # type: ignore[attr-defined]
                log.write(f"{self.address_string()} {format % args}\n")


class AssetServer:
    """`with AssetServer(node_modules, log_path) as server: server.url`"""

    def __init__(self, node_modules: Path, log_path: Path | None = None) -> None:
        sdk_dir = (node_modules / "@openim" / "wasm-client-sdk").resolve()
        handler = type("Handler", (_Handler,), {"sdk_dir": sdk_dir})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.log_path = log_path  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
