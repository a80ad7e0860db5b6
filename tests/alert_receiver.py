"""A real HTTP receiver for alerts (webhooks, and Home Assistant's notify REST call), for tests.

It runs an aiohttp server on the test's own event loop, records every request with
the wall-clock time it arrived, and can refuse the first N with HTTP 500 to test
re-delivery.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Received:
    path: str
    body: dict
    headers: dict
    at: float
    status: int


@dataclass
class AlertReceiver:
    fail_first: int = 0
    """Answer this many requests with HTTP 500 before acknowledging (200)."""
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alert"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def acknowledged(self) -> list[Received]:
        return [r for r in self.received if r.status == 200]

    async def _any(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_raw": raw.decode(errors="replace")}
        status = 500 if len(self.received) < self.fail_first else 200
        self.received.append(
            Received(request.path, body, dict(request.headers), time.time(), status)
        )
        return web.json_response({"ok": status == 200}, status=status)

    async def __aenter__(self) -> AlertReceiver:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        return self

    async def __aexit__(self, *exc) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class ThreadedAlertReceiver:
    """The same receiver on its own thread (http.server), for tests that block their loop."""

    def __init__(self, fail_first: int = 0):
        import http.server
        import threading

        self.fail_first = fail_first
        self.received: list[Received] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                status = 500 if len(outer.received) < outer.fail_first else 200
                outer.received.append(
                    Received(self.path, body, dict(self.headers), time.time(), status)
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alert"

    @property
    def acknowledged(self) -> list[Received]:
        return [r for r in self.received if r.status == 200]

    def __enter__(self) -> ThreadedAlertReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
