"""uvicorn's protocols with the limits an unauthenticated client must meet before Nabu reads on.

Anyone who can reach the port gets a TCP connection before any token is
checked, so the HTTP layer bounds what that costs:
- a request's line and headers must be complete within `REQUEST_HEAD_TIMEOUT_S`
  of connecting (or of the previous response): uvicorn's h11 protocol has no
  such timer, and one that restarts on every byte would let a client dribble
  a header forever;
- headers are at most `MAX_HEAD_BYTES` (h11's limit; the httptools parser
  uvicorn picks by default has none, and answered an 8 MB header);
- at most `MAX_CONNECTIONS` connections are served at once (uvicorn's
  `limit_concurrency`: plain HTTP beyond it gets 503; WebSocket upgrades are
  admitted by the server's own session limit);
- a refused WebSocket handshake (an HTTP 401/403/503 denial response) is an
  ordinary outcome, not the "ASGI callable returned without completing
  handshake" ERROR uvicorn logs for it.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

REQUEST_HEAD_TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 16 * 1024  # a token in the URL and a browser's headers fit many times over
MAX_CONNECTIONS = 64
KEEP_ALIVE_S = 5


class DeadlineH11Protocol(H11Protocol):
    """h11 with a deadline for each request's line and headers, however slowly they trickle."""

    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        before = self.scope
        super().data_received(data)
        if self.scope is not before:  # a request's head arrived (an upgrade included)
            self._disarm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()  # the next request on this keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(REQUEST_HEAD_TIMEOUT_S, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.transport.get_protocol() is self and not self.transport.is_closing():
            self.transport.close()


class QuietDenialWebSocketProtocol(WebSocketsSansIOProtocol):
    """websockets-sansio that treats a sent denial response as a finished handshake."""

    async def send(self, message) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True  # answered: nothing for run_asgi to report


def uvicorn_limits() -> dict:
    """The uvicorn.Config arguments that apply these limits."""
    return {
        "http": DeadlineH11Protocol,
        "ws": QuietDenialWebSocketProtocol,  # websockets-sansio
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "limit_concurrency": MAX_CONNECTIONS,
        "timeout_keep_alive": KEEP_ALIVE_S,
    }
