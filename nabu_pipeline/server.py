"""`nabu serve`: the WebSocket server Warren's phone app (and the desk-test page) talk to.

Pipecat's own protocol, so the official Pipecat client SDKs (JavaScript,
Android, iOS) work unchanged: `FastAPIWebsocketTransport` with protobuf frames
and RTVI (client-ready/bot-ready, user transcription, bot text, bot
speaking, errors). One pipeline per connection, as pipecat's runner does it;
Whisper and Piper are loaded once per process (`engines`) and shared.

    GET /         Warren's phone app (installable web app; routes in phone_app.py)
    GET /desk     desk-test page with the pairing link and QR code
    GET /healthz  {"status": "ok", "sessions": n, "max_sessions": m}
    WS  /ws       ?token=... (required when set or when bound beyond loopback): the
                  master token or a paired device's token (devices.py)
    /api/memory   what Warren asked Nabu to keep, for his family (memory_api.py; same auth)
                  ?session=... (resume that conversation; a new id is sent otherwise)

A connection is checked in this order, refusals costing nothing: origin and
host (a browser page from elsewhere, or reached through a name this server
does not answer to, gets HTTP 403; `origins.py`), token (compared in constant
time; HTTP 401), session id (RTVI error, close 1008), capacity (HTTP 503
"busy", before the handshake is accepted). A session id that is already
connected is taken over by the new connection: a phone that lost its network
reconnects before the server has noticed the old socket is dead. What an
unauthenticated client costs at the HTTP layer is bounded in `http_limits.py`.

Bad input never takes the server down: messages over `max_message_bytes`
close that connection (1009); garbage, unknown frames, invalid RTVI messages
and unsupported sample rates are dropped by `PhoneFrameSerializer`, logged
once per kind, answered with an RTVI error, and a session that keeps sending
them is closed (1008). Whatever
ends a session (the client vanishing mid-reply included) cancels its
pipeline and frees it; other sessions never notice.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import os
import re
import time
import uuid
from collections import Counter
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse
from loguru import logger
from pipecat.frames.frames import OutputTransportMessageUrgentFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frameworks.rtvi import models as RTVI
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner
from starlette.websockets import WebSocketState

from nabu_pipeline import engines, phone_app
from nabu_pipeline.alerts import AlertService
from nabu_pipeline.config import ConfigError, NabuConfig
from nabu_pipeline.conversation_store import ConversationStore, record_turns
from nabu_pipeline.devices import DeviceStore
from nabu_pipeline.freed_memory import FreedMemory
from nabu_pipeline.http_limits import uvicorn_limits
from nabu_pipeline.logs import route_stdlib_logging
from nabu_pipeline.memory_api import memory_router
from nabu_pipeline.memory_store import shared_store
from nabu_pipeline.origins import OriginPolicy
from nabu_pipeline.pipeline import build_session, describe_llm
from nabu_pipeline.reminders import ReminderService, WorkerSpeaker
from transports.phone_serializer import PhoneFrameSerializer

WEB_DIR = Path(__file__).with_name("web")
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{8,128}")  # whole string: fullmatch, never match
MIN_TOKEN_CHARS = 16
CLOSE_POLICY = 1008  # bad session id, too many bad messages
CLOSE_BUSY = 1013  # "try again later": max_sessions reached after the handshake (a race)
CLOSE_MEANINGS = {
    1000: "closed by the client",
    1001: "client went away",
    1005: "dropped, or closed without a code",
    1006: "connection lost",
    1009: "message over max_message_bytes",
    1012: "server restarting",
}
TAKEOVER_TIMEOUT_S = 10.0
PRUNE_EVERY_S = 3600.0
# uvicorn pings every client; one that stops answering (phone out of coverage) is dropped.
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0


def is_loopback(host: str) -> bool:
    """True when only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_token_for(host: str, environ: dict | os._Environ = os.environ) -> str | None:
    """The token clients must present, or None; a ConfigError when one is needed and missing.

    A set NABU_AUTH_TOKEN is always enforced; beyond loopback it is required.
    """
    token = (environ.get("NABU_AUTH_TOKEN") or "").strip()
    if token and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"NABU_AUTH_TOKEN is too short ({len(token)} characters); use at least "
            f"{MIN_TOKEN_CHARS}, e.g. the output of `python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(24))'`."
        )
    if not token and not is_loopback(host):
        raise ConfigError(
            f"nabu serve --host {host} is reachable from other machines, so clients must "
            "authenticate: set NABU_AUTH_TOKEN (clients pass it as ?token=...), or bind to "
            "127.0.0.1."
        )
    return token or None


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison that does not even leak the token's length."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def rtvi_error(error: str, *, fatal: bool) -> RTVI.Error:
    """An RTVI `error` message; the Pipecat clients raise it as onError."""
    return RTVI.Error(data=RTVI.ErrorData(error=error, fatal=fatal))


CLOSE_CODE_KEY = "nabu.close_code"


class RecordCloseCode:
    """ASGI middleware noting how a client closed its WebSocket, for the session's log line.

    pipecat's receive loop sees only that the socket ended; the code tells a
    phone that hung up (1000) from one that lost signal (1006) or sent an
    oversized message (1009).
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)

        async def recording_receive():
            message = await receive()
            if message["type"] == "websocket.disconnect":
                scope[CLOSE_CODE_KEY] = message.get("code")
            return message

        return await self.app(scope, recording_receive, send)


@dataclass
class LiveSession:
    """One connected conversation."""

    id: str
    peer: str
    websocket: WebSocket | None = None
    started: float = field(default_factory=time.monotonic)
    worker: PipelineWorker | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    problems: Counter = field(default_factory=Counter)
    end_reason: str = ""
    turns: int = 0

    @property
    def short(self) -> str:
        return self.id[:8]

    async def end(self, reason: str, *, tell_client: str = "", close_code: int = 0) -> None:
        """Cancel this session's pipeline (its connection closes with it, with `close_code`)."""
        if not self.end_reason:
            self.end_reason = reason
        if close_code and self.websocket is not None:
            await close_with(self.websocket, close_code, tell_client)
            tell_client = ""  # told already
        if self.worker is not None:
            if tell_client:
                await self.worker.rtvi.push_transport_message(rtvi_error(tell_client, fatal=True))
            await self.worker.cancel(reason=reason)


class NabuServer:
    """The sessions of one `nabu serve` process and the FastAPI app serving them."""

    def __init__(self, config: NabuConfig, *, auth_token: str | None):
        self.config = config
        self.settings = config.server
        self._token = auth_token
        self._origins = OriginPolicy(self.settings.allowed_origins)
        self.store = ConversationStore(
            self.settings.data_path, retention_days=self.settings.history_retention_days
        )
        self.devices = DeviceStore(self.settings.data_path)
        self.pairing = phone_app.Pairing(self.devices)
        self.web_dir = WEB_DIR
        # Process-wide, so a phone that vanishes never cancels an alert or a reminder.
        self.alerts = AlertService(config.safety)
        self.reminders = ReminderService(
            self.settings.data_path, config.safety, config.locale, self.alerts
        )
        self.sessions: dict[str, LiveSession] = {}
        self._admission = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._freed = FreedMemory()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app = self._build_app()

    @property
    def master_token(self) -> str | None:
        """NABU_AUTH_TOKEN (None when auth is off): it alone may ask for a pairing link."""
        return self._token

    # --- app ----------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Nabu", lifespan=self._lifespan, docs_url=None, redoc_url=None)
        app.add_middleware(RecordCloseCode)

        @app.get("/healthz")
        async def healthz() -> JSONResponse:
            return JSONResponse(
                {
                    "status": "ok",
                    "sessions": len(self.sessions),
                    "max_sessions": self.settings.max_sessions,
                }
            )

        phone_app.add_routes(app, self)

        @app.websocket("/ws")
        async def ws(websocket: WebSocket) -> None:
            await self.handle(websocket)

        if self.config.memory.enabled:  # the family's view of what Warren asked Nabu to keep
            app.include_router(
                memory_router(lambda: shared_store(self.settings.data_path), self.refusal)
            )

        return app

    @asynccontextmanager
    async def _lifespan(self, _app: FastAPI):
        start = time.perf_counter()
        self.loop = asyncio.get_running_loop()
        logger.info(describe_llm(self.config))
        # Load the shared models before the first caller, off the event loop. With a
        # fallback configured, a local model that will not load is not fatal: each
        # session then uses the fallback (pipeline.build_stt / build_tts).
        stt, tts = self.config.stt, self.config.tts
        if stt.provider == "local_whisper":
            await asyncio.to_thread(engines.local_or_none, engines.whisper, stt)
        if tts.provider == "piper":
            await asyncio.to_thread(engines.local_or_none, engines.piper, tts)
        await self.store.open()
        if self.config.memory.enabled:
            await asyncio.to_thread(shared_store, self.settings.data_path)
        await self.reminders.start()
        logger.info(self.alerts.describe())
        pruner = asyncio.create_task(self._prune_forever(), name="nabu-store-prune")
        releaser = asyncio.create_task(self._freed.run(lambda: not self.sessions))
        logger.info(
            f"Nabu server ready in {time.perf_counter() - start:.1f}s "
            f"(max {self.settings.max_sessions} sessions, auth "
            f"{'token' if self._token else 'off (loopback only)'})"
        )
        try:
            yield
        finally:
            pruner.cancel()
            releaser.cancel()
            for live in list(self.sessions.values()):
                await live.end("server shutting down", tell_client="Nabu is restarting.")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._all_done(), 10)
            await asyncio.gather(pruner, releaser, return_exceptions=True)
            await self.store.close()
            await self.reminders.close()
            if not await self.alerts.wait_settled(5):
                logger.error("Stopping with an alert still undelivered")
            await self.alerts.close()
            logger.info("Nabu server stopped")

    async def _all_done(self) -> None:
        while self.sessions:
            await next(iter(self.sessions.values())).done.wait()

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            try:
                removed = await self.store.prune()
                if removed:
                    logger.info(f"Conversation store: pruned {removed} old messages")
            except Exception as e:  # the store stays usable; try again next hour
                logger.warning(f"Conversation store: prune failed ({type(e).__name__}: {e})")

    # --- admission ----------------------------------------------------------------------------

    def _origin_refusal(self, websocket: WebSocket | Request) -> str | None:
        """Why a browser page may not connect (another site's, or DNS rebinding); None if it may.

        A client with no Origin is not a browser page (the phone app); the
        check exists to stop other web sites using a visitor's browser, and the
        token covers everything else.
        """
        headers = websocket.headers
        return self._origins.refusal(headers.get("origin", ""), headers.get("host", ""))

    async def refusal(self, conn: WebSocket | Request) -> tuple[int, str] | None:
        """Why a connection or request is refused (HTTP status, reason), or None: one rule for
        /ws and the HTTP API. Origin first (403), then the token (401): the master token or a
        paired device's token (devices.py)."""
        if (origin_refusal := self._origin_refusal(conn)) is not None:
            return 403, origin_refusal
        if self._token is not None:
            given = conn.query_params.get("token", "")
            auth = conn.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not given or not (
                token_matches(given, self._token)
                or await phone_app.device_accepts(self.devices, given, conn)
            ):
                reason = "wrong token" if given else "missing token"
                return 401, f"{reason} (pass ?token=...)"
        return None

    async def _deny(self, websocket: WebSocket, status: int, text: str, peer: str) -> None:
        logger.warning(f"Refused WebSocket from {peer}: {text}")
        try:
            await websocket.send_denial_response(PlainTextResponse(text, status_code=status))
        except RuntimeError:  # the ASGI server cannot send HTTP responses to WebSocket requests
            await websocket.close(code=CLOSE_POLICY)

    async def _refuse(self, websocket: WebSocket, code: int, text: str, peer: str) -> None:
        """Tell an accepted client why in its own protocol (an RTVI error), then close."""
        logger.warning(f"Refused session from {peer}: {text}")
        await close_with(websocket, code, text)

    def _busy(self, session_id: str) -> bool:
        """No room for another session (a takeover of a connected one needs none)."""
        taken = len(self.sessions) - (session_id in self.sessions)
        return taken >= self.settings.max_sessions

    async def handle(self, websocket: WebSocket) -> None:
        client = websocket.client
        peer = f"{client.host}:{client.port}" if client else "unknown"
        refusal = await self.refusal(websocket)
        if refusal is not None:
            return await self._deny(websocket, *refusal, peer)
        requested = websocket.query_params.get("session")
        if requested is not None and not SESSION_ID.fullmatch(requested):
            await websocket.accept()
            return await self._refuse(
                websocket,
                CLOSE_POLICY,
                "session ids are 8-128 letters, digits, '-' or '_'",
                peer,
            )
        session_id = requested or uuid.uuid4().hex
        if self._busy(session_id):  # refused before the handshake: the client never connected
            return await self._deny(websocket, 503, self._busy_text(), peer)
        await websocket.accept()
        live = LiveSession(id=session_id, peer=peer, websocket=websocket)
        async with self._admission:
            old = self.sessions.get(session_id)
            if old is not None:
                logger.info(f"Session {live.short}: reconnected from {peer}; ending the old one")
                await old.end(
                    "taken over by a new connection",
                    tell_client="This conversation continued on a newer connection.",
                )
                with suppress(TimeoutError):
                    await asyncio.wait_for(old.done.wait(), TAKEOVER_TIMEOUT_S)
            if self._busy(session_id):  # filled while this handshake was being accepted
                return await self._refuse(websocket, CLOSE_BUSY, self._busy_text(), peer)
            self.sessions[session_id] = live
        try:
            await self._run(websocket, live)
        except Exception as e:
            live.end_reason = live.end_reason or f"error: {type(e).__name__}: {e}"
            logger.exception(f"Session {live.short}: failed ({type(e).__name__}: {e})")
        finally:
            if self.sessions.get(session_id) is live:
                del self.sessions[session_id]
            live.done.set()
            problems = ", ".join(f"{k}x{n}" for k, n in sorted(live.problems.items()))
            replies = f"{live.turns} repl{'y' if live.turns == 1 else 'ies'}"
            logger.info(
                f"Session {live.short} ended after {time.monotonic() - live.started:.1f}s: "
                f"{live.end_reason or 'closed'}; {replies}"
                f"{f'; dropped messages: {problems}' if problems else ''}"
            )
            if websocket.client_state == WebSocketState.CONNECTED:
                with suppress(Exception):
                    await websocket.close(code=1000)
            self._freed.session_ended()

    # --- one session --------------------------------------------------------------------------

    async def _run(self, websocket: WebSocket, live: LiveSession) -> None:
        config = self.config
        # A session gets its row with its first message: connections that never say
        # anything leave nothing behind.
        messages, known = await self.store.load(live.id, config.conversation.history_turns)

        async def on_problem(kind: str, detail: str) -> None:
            await self._on_problem(live, kind, detail)

        serializer = PhoneFrameSerializer(
            sample_rate_hz=config.audio.in_sample_rate_hz, on_problem=on_problem
        )
        transport = FastAPIWebsocketTransport(
            websocket,
            FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_in_sample_rate=config.audio.in_sample_rate_hz,
                audio_out_enabled=True,
                audio_out_sample_rate=config.audio.out_sample_rate_hz,
                serializer=serializer,
                allowed_origins=[],  # checked before accepting, with this server's own rules
                session_timeout=None,
            ),
        )
        # Building a pipeline loads the VAD and turn models (~0.1 s): not on the event loop.
        session = await asyncio.to_thread(
            build_session,
            config,
            transport,
            context=LLMContext(messages),
            worker_kwargs={
                "idle_timeout_secs": self.settings.session_idle_timeout_s,
                "conversation_id": live.id,
            },
            alerts=self.alerts,
            reminders=self.reminders,
            session_id=live.id,
        )
        live.worker = session.worker
        speaker = WorkerSpeaker(session.worker)
        record_turns(self.store, live.id, session.parts["user"], session.parts["assistant"])

        @session.parts["assistant"].event_handler("on_assistant_turn_stopped")
        async def _count(_aggregator, _message) -> None:
            live.turns += 1

        @transport.event_handler("on_client_disconnected")
        async def _gone(_transport, _websocket) -> None:
            code = websocket.scope.get(CLOSE_CODE_KEY)
            meaning = CLOSE_MEANINGS.get(code, "closed")
            if code == 1012:
                await live.end("server shutting down (1012)")
            elif code:
                await live.end(f"client disconnected ({code}: {meaning})")
            else:
                await live.end("client gone")

        @session.worker.event_handler("on_idle_timeout")
        async def _idle(_worker) -> None:
            live.end_reason = live.end_reason or (
                f"nobody spoke for {self.settings.session_idle_timeout_s:.0f}s"
            )

        @session.worker.rtvi.event_handler("on_client_ready")
        async def _ready(rtvi) -> None:
            # After bot-ready (the worker's own handler runs first): the id to resume with.
            await rtvi.send_server_message(
                {
                    "type": "nabu-session",
                    "session": live.id,
                    "resumed": known,
                    "messages": len(messages),
                }
            )
            # From now on this phone says reminders; first, what he missed while away.
            await self.reminders.greet(speaker)

        logger.info(
            f"Session {live.short} started for {live.peer} "
            f"({f'resumed with {len(messages)} messages' if known else 'new'}; "
            f"{len(self.sessions)}/{self.settings.max_sessions} sessions)"
        )
        if live.end_reason:  # taken over or shut down while it was being built
            return
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(session.worker)
        try:
            await runner.run()
        finally:
            self.reminders.detach(speaker)
        if serializer.rates_seen - {config.audio.in_sample_rate_hz}:
            rates = ", ".join(str(r) for r in sorted(serializer.rates_seen))
            logger.info(f"Session {live.short}: resampled client audio from {rates} Hz")

    async def _on_problem(self, live: LiveSession, kind: str, detail: str) -> None:
        """A client message was dropped: log and tell the client once per kind; count it."""
        live.problems[kind] += 1
        total = sum(live.problems.values())
        worker = live.worker
        if live.problems[kind] == 1:
            logger.warning(f"Session {live.short}: dropped {detail} (further ones are counted)")
            if worker is not None:
                error = rtvi_error(f"Ignored {detail}.", fatal=False)
                await worker.rtvi.push_transport_message(error)
        if total == self.settings.max_bad_messages and worker is not None:
            text = f"Closing this connection: {total} messages could not be used (e.g. {detail})."
            logger.warning(f"Session {live.short}: {text}")
            # Not from inside the receive loop that called us: cancelling waits for that loop.
            task = asyncio.create_task(
                live.end("too many unusable messages", tell_client=text, close_code=CLOSE_POLICY)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _busy_text(self) -> str:
        return (
            f"Nabu is busy: {self.settings.max_sessions} conversations are already "
            "connected. Try again in a moment."
        )


async def close_with(websocket: WebSocket, code: int, text: str) -> None:
    """Send an RTVI error (when there is `text`) and close with `code`; a gone client is fine."""
    with suppress(Exception):
        if text:
            frame = OutputTransportMessageUrgentFrame(
                message=rtvi_error(text, fatal=True).model_dump(exclude_none=True)
            )
            payload = await PhoneFrameSerializer(sample_rate_hz=16000).serialize(frame)
            await websocket.send_bytes(payload)
        await websocket.close(code=code, reason=text[:120])


def create_app(config: NabuConfig, *, auth_token: str | None) -> FastAPI:
    """The FastAPI app of `nabu serve` (tests run it in-process with uvicorn)."""
    return NabuServer(config, auth_token=auth_token).app


def tls_options(settings) -> dict:
    """uvicorn's TLS arguments from server.tls_certfile/tls_keyfile; a ConfigError if unreadable."""
    if not settings.tls_certfile:
        return {}
    files = {"ssl_certfile": settings.tls_certfile, "ssl_keyfile": settings.tls_keyfile}
    for key, path in files.items():
        if not Path(path).expanduser().is_file():
            name = "certificate" if key == "ssl_certfile" else "private key"
            raise ConfigError(f"TLS {name} not found: {path}")
    return {k: str(Path(v).expanduser()) for k, v in files.items()}


def uvicorn_config(app: FastAPI, config: NabuConfig, host: str, port: int):
    """uvicorn settings: message size and HTTP limits, pings, TLS, logs through loguru's
    redaction."""
    import uvicorn

    route_stdlib_logging("uvicorn", "uvicorn.error", "uvicorn.access")
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ws_max_size=config.server.max_message_bytes,
        ws_ping_interval=PING_INTERVAL_S,
        ws_ping_timeout=PING_TIMEOUT_S,
        log_config=None,
        access_log=True,
        lifespan="on",
        timeout_graceful_shutdown=10,
        **tls_options(config.server),
        **uvicorn_limits(),
    )


def serve(config: NabuConfig, host: str, port: int) -> int:
    """Run `nabu serve` until interrupted."""
    import uvicorn

    token = auth_token_for(host)
    nabu = NabuServer(config, auth_token=token)
    server = uvicorn.Server(uvicorn_config(nabu.app, config, host, port))
    tls = bool(config.server.tls_certfile)
    shown = f"[{host}]" if ":" in host else host
    logger.info(
        f"Serving on {'https' if tls else 'http'}://{shown}:{port} "
        "(WebSocket /ws, phone app /, desk page /desk, health /healthz)"
    )
    phone_app.announce_pairing(nabu, host, port, tls=tls, local=is_loopback(host))
    server.run()
    return 0 if server.started else 1
