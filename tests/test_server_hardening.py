"""`nabu serve` against a hostile web page and a clumsy client, over real sockets.

Each probe is sent to a real `nabu serve` process (the CLI, on its own port,
uvicorn's own HTTP and WebSocket protocols) because the point is what the
server itself does with them: its limits, its handshake, its log. The same
probes, with before/after figures, are `python -m benchmarks.server_probes`.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import stat
import time
from pathlib import Path

import httpx
import pipecat.frames.protobufs.frames_pb2 as pb
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from benchmarks.phone_client import PhoneClient, rtvi_frame
from nabu_pipeline.conversation_store import DB_NAME
from nabu_pipeline.logs import escape_controls, redact
from nabu_pipeline.origins import OriginPolicy
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer
from nabu_pipeline.server import SESSION_ID

from .server_harness import cli_process

TOKEN = "hardening-token-0123456789abcdef"
ALLOWED = "https://nabu.example.org"
MAX_BAD = 20
CONFIG = f"stt:\n  model: tiny.en\nserver:\n  max_sessions: 2\n  max_bad_messages: {MAX_BAD}\n"
FORGED = "x\n00:00:00.000 | ERROR   | FORGED LINE"


class Served:
    """One running `nabu serve` and its log, read from a mark."""

    def __init__(self, running, data: Path, llm: ScriptedLLMServer):
        self.running, self.data, self.llm = running, data, llm
        self.port = running.port
        self.host = f"127.0.0.1:{self.port}"

    def ws(self, **query) -> str:
        return self.running.ws(**query)

    def mark(self) -> int:
        return len(self.running.log())

    def log_since(self, mark: int) -> str:
        return self.running.log()[mark:]


@pytest.fixture(scope="module")
def llm():
    with ScriptedLLMServer(Script(reply="The door is locked.", ttft_s=0.05)) as server:
        yield server


def _serve(tmp: Path, llm, allowed: tuple[str, ...] = (), token: str | None = None):
    config = tmp / "nabu.yaml"
    origins = f"  allowed_origins: {list(allowed)}\n" if allowed else ""
    config.write_text(CONFIG + origins)
    env = {"NABU_LLM_BASE_URL": llm.url, "NABU_DATA_DIR": str(tmp / "data")}
    if token:
        env["NABU_AUTH_TOKEN"] = token
    return cli_process(env, tmp / "serve.log", "--config", str(config)), tmp / "data"


def _without_developer_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Module fixtures start before the per-test clean environment: clean it here."""
    for var in ("NABU_AUTH_TOKEN", "NABU_CONFIG", "OPENAI_API_KEY", "NABU_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory, llm):
    """Loopback, no token, no allowlist: the default a fresh install runs."""
    with pytest.MonkeyPatch.context() as mp:
        _without_developer_env(mp)
        ctx, data = _serve(tmp_path_factory.mktemp("open"), llm)
        with ctx as running:
            yield Served(running, data, llm)


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory, llm):
    with pytest.MonkeyPatch.context() as mp:
        _without_developer_env(mp)
        ctx, data = _serve(tmp_path_factory.mktemp("secured"), llm, (ALLOWED,), TOKEN)
        with ctx as running:
            yield Served(running, data, llm)


async def handshake(url: str, host: str | None = None, **headers) -> int:
    """The handshake's HTTP status (101 when accepted), with `Host: host` if given."""
    kwargs: dict = {"uri": url}
    if host is not None:  # what a DNS-rebinding page sends: its own name, our address
        port = int(url.split(":")[2].split("/")[0])
        kwargs = {
            "uri": url.replace(f"127.0.0.1:{port}", host),
            "sock": socket.create_connection(("127.0.0.1", port)),
        }
    try:
        async with connect(**kwargs, additional_headers=headers or None, open_timeout=30):
            return 101
    except InvalidStatus as e:
        return e.response.status_code


async def wait_healthy_sessions(srv: Served, n: int, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while (await asyncio.to_thread(srv.running.health))["sessions"] != n:
        assert time.monotonic() < deadline, "sessions did not end"
        await asyncio.sleep(0.2)


# --- 1. origins and DNS rebinding -----------------------------------------------------------


async def test_without_an_allowlist_only_the_servers_own_pages_connect(open_server):
    srv = open_server
    assert await handshake(srv.ws(), Origin="https://evil.example.com") == 403
    assert await handshake(srv.ws(), Origin="null") == 403
    rebinding = f"rebind.evil.example:{srv.port}"
    assert await handshake(srv.ws(), host=rebinding, Origin=f"http://{rebinding}") == 403
    for own in (f"http://{srv.host}", f"http://localhost:{srv.port}"):
        phone = PhoneClient(srv.ws())
        await phone.open(Origin=own)
        assert phone.session_info is not None
        await phone.close()
    assert await handshake(srv.ws()) == 101  # no Origin: not a browser page (the phone app)


async def test_dns_rebinding_is_refused_with_an_allowlist_too(secured_server):
    srv = secured_server
    url = srv.ws(token=TOKEN)
    rebinding = f"rebind.evil.example:{srv.port}"
    assert await handshake(url, host=rebinding, Origin=f"https://{rebinding}") == 403
    assert await handshake(url, Origin="https://evil.example.com") == 403
    assert await handshake(url, Origin=ALLOWED) == 101
    # The allowed site's own name is one this server answers to (behind a reverse proxy).
    assert await handshake(url, host="nabu.example.org", Origin=ALLOWED) == 101


def test_origin_policy_rules():
    policy = OriginPolicy(())
    assert policy.refusal("", "anything:1") is None  # not a browser
    assert policy.refusal("http://127.0.0.1:7860", "127.0.0.1:7860") is None
    assert policy.refusal("http://localhost:7860", "127.0.0.1:7860") is None
    assert policy.refusal("http://[::1]:7860", "localhost:7860") is None
    assert policy.refusal("http://localhost:7861", "127.0.0.1:7860") is not None  # other port
    assert policy.refusal("http://192.168.1.5:7860", "192.168.1.5:7860") is None  # LAN page
    assert "host" in policy.refusal("http://evil.example:7860", "evil.example:7860")
    assert policy.refusal("https://evil.example", "127.0.0.1:7860") is not None
    assert policy.refusal("http://127.0.0.1:7860", "") is not None


# --- 2. invalid RTVI messages are counted, logged once, escaped ------------------------------


async def test_invalid_rtvi_messages_are_counted_and_logged_once_escaped(open_server):
    srv = open_server
    mark = srv.mark()
    phone = PhoneClient(srv.ws())
    await phone.open(mic=False)
    for i in range(MAX_BAD * 3):
        if i % 2:
            await phone.send_rtvi({"type": FORGED})
        else:  # fails pipecat's model: client-message needs `t`
            await phone.send_rtvi({"type": "client-message", "data": {"d": FORGED}})
    await phone.wait_until(lambda: phone.closed, 30, "close")
    await phone.close()
    assert phone.close_code == 1008, phone.close_code
    assert f"{MAX_BAD} messages could not be used" in phone.errors()[-1], phone.errors()
    await wait_healthy_sessions(srv, 0)
    lines = srv.log_since(mark).splitlines()
    dropped = [ln for ln in lines if ": dropped " in ln]
    assert len(dropped) == 2, dropped  # once per kind
    assert not any(ln.startswith("00:00:00.000") for ln in lines), "a forged log line"
    assert any("x\\n00:00:00.000" in ln for ln in dropped), dropped
    assert all(len(ln) < 400 for ln in lines), "client text must be truncated"


# --- 3. the HTTP layer's limits ---------------------------------------------------------------


def _closed_by_server(s: socket.socket, within_s: float) -> bool:
    s.settimeout(within_s)
    try:
        return s.recv(65536) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


async def test_idle_and_half_sent_connections_are_closed(open_server):
    port = open_server.port
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    half = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    for s in half:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
    drip = socket.create_connection(("127.0.0.1", port))
    drip.sendall(b"GET /healthz HTTP/1.1\r\n")
    started = time.monotonic()
    dripped_until = None
    while time.monotonic() - started < 40:  # a byte a second: a per-byte timer never fires
        await asyncio.sleep(1)
        try:
            drip.sendall(b"X")
        except OSError:
            dripped_until = time.monotonic() - started
            break
    assert dripped_until is not None, "a request head dribbled in forever was never cut off"
    closed = await asyncio.to_thread(lambda: [_closed_by_server(s, 30) for s in idle + half])
    for s in [*idle, *half, drip]:
        s.close()
    assert all(closed), f"{closed.count(False)} of {len(closed)} connections still open"


def test_an_oversized_header_is_refused(open_server):
    try:
        status = httpx.get(
            f"http://{open_server.host}/healthz", headers={"X-Big": "a" * 8_000_000}, timeout=60
        ).status_code
    except httpx.HTTPError:
        status = None  # closed without an answer: refused too
    assert status != 200


async def test_connections_beyond_the_cap_get_503_then_service_resumes(open_server):
    port = open_server.port
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(80)]
    try:
        await asyncio.sleep(0.5)
        crowded = await asyncio.to_thread(
            httpx.get, f"http://{open_server.host}/healthz", timeout=30
        )
    finally:
        for s in held:
            s.close()
    assert crowded.status_code == 503
    deadline = time.monotonic() + 30
    while True:
        ok = await asyncio.to_thread(httpx.get, f"http://{open_server.host}/healthz", timeout=30)
        if ok.status_code == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert ok.status_code == 200


# --- 4, 5, 6: nested JSON, typed input, session ids --------------------------------------------


async def test_deeply_nested_json_gets_an_error_and_the_session_goes_on(open_server):
    srv = open_server
    mark = srv.mark()
    async with PhoneClient(srv.ws()) as phone:
        deep = pb.Frame(message=pb.MessageFrame(data="[" * 60000)).SerializeToString()
        await phone.send_raw(deep)
        await phone.wait_until(
            lambda: any("nested more than" in e for e in phone.errors()), 15, "RTVI error"
        )
        await phone.send_rtvi({"type": "client-message", "data": {"t": "ping", "d": {}}})
        await asyncio.sleep(1)
        assert not phone.closed
    assert "RecursionError" not in srv.log_since(mark)


async def test_typed_text_never_reaches_the_llm(open_server):
    srv = open_server
    asked = len(srv.llm.requests)
    async with PhoneClient(srv.ws(session="typed-text-session")) as phone:
        for kind, data in (
            ("send-text", {"content": "Unlock the front door.", "options": {}}),
            ("send-file", {"content": [{"type": "text", "text": "Unlock the front door."}]}),
        ):
            await phone.send_rtvi({"type": kind, "data": data})
        await phone.wait_until(lambda: phone.errors(), 15, "RTVI error")
        await asyncio.sleep(2)
    assert "send-text" in phone.errors()[0] and "audio" in phone.errors()[0]
    assert len(srv.llm.requests) == asked
    assert not phone.bot_text()
    stored = "SELECT COUNT(*) FROM messages WHERE session_id = 'typed-text-session'"
    assert _rows(srv.data, stored) == 0


def test_session_ids_must_match_whole():
    assert SESSION_ID.fullmatch("warren-phone_01")
    for bad in ("abcdefgh\n", "abcdefgh\r\n", "short", "../etc/passwd", "a" * 129):
        assert not SESSION_ID.fullmatch(bad), bad


async def test_a_session_id_with_a_trailing_newline_is_refused(open_server):
    phone = PhoneClient(open_server.ws(session="abcdefgh%0A"))
    await phone.open(ready=False, mic=False)
    await phone.wait_until(lambda: phone.closed, 15, "close")
    assert phone.close_code == 1008 and "session ids are" in phone.errors()[0]


# --- 7. quick connects, capacity --------------------------------------------------------------


async def test_quick_connect_disconnects_leave_no_tasks_behind(open_server):
    srv = open_server
    await wait_healthy_sessions(srv, 0)  # an earlier test's session may still be ending
    mark = srv.mark()
    for i in range(20):
        await wait_healthy_sessions(srv, 0)  # max_sessions is 2: one at a time
        async with connect(srv.ws()) as ws:
            await ws.send(
                rtvi_frame({"label": "rtvi-ai", "id": f"q{i}", "type": "client-ready", "data": {}})
            )
            await asyncio.sleep(0.05 * (i % 5))
    await wait_healthy_sessions(srv, 0)
    await asyncio.sleep(1)
    log = srv.log_since(mark)
    assert log.count("ended after") == 20, log[-2000:]
    assert "dangling" not in log and "Task was destroyed" not in log, log[-3000:]


async def test_busy_is_refused_before_the_handshake_and_takeover_still_works(open_server):
    srv = open_server
    phones = [PhoneClient(srv.ws(session=f"busy-session-{i}")) for i in range(2)]
    for phone in phones:
        await phone.open(mic=False)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(srv.ws(), open_timeout=30):
            pass
    assert refused.value.response.status_code == 503
    assert b"Nabu is busy" in refused.value.response.body
    # The phone reconnecting to its own session takes it over even when full.
    async with PhoneClient(srv.ws(session="busy-session-0")) as again:
        assert again.session_info["session"] == "busy-session-0"
        await phones[0].wait_until(lambda: phones[0].closed, 15, "old connection closed")
    for phone in phones:
        await phone.close()
    await wait_healthy_sessions(srv, 0)


# --- 8. close codes, log hygiene, the store ---------------------------------------------------


async def test_too_many_bad_messages_close_with_1008(open_server):
    phone = PhoneClient(open_server.ws())
    await phone.open(mic=False)
    for _ in range(MAX_BAD + 5):
        await phone.send_raw(b"\xff not protobuf")
    await phone.wait_until(lambda: phone.closed, 15, "close")
    await phone.close()
    assert phone.close_code == 1008


async def test_refused_handshakes_log_a_warning_and_no_error(secured_server):
    srv = secured_server
    mark = srv.mark()
    assert await handshake(srv.ws(token="wrong-token-0123456789abc")) == 401
    assert await handshake(srv.ws()) == 401
    assert await handshake(srv.ws(token=TOKEN), Origin="https://evil.example.com") == 403
    await asyncio.sleep(0.5)
    log = srv.log_since(mark)
    assert log.count("Refused WebSocket") == 3, log
    assert "ERROR" not in log, log
    assert "missing token (pass ?token=...)" in log  # the redaction leaves its advice whole


async def test_the_token_never_reaches_the_log_in_any_encoding(secured_server):
    srv = secured_server
    every_byte = "".join(f"%{b:02X}" for b in TOKEN.encode())
    mark = srv.mark()
    for query in (f"tok%65n={TOKEN}", f"tok%65n={every_byte}", f"token={every_byte.lower()}"):
        async with PhoneClient(srv.ws() + "?" + query) as phone:  # accepted: the decoded name
            assert phone.session_info is not None
    await wait_healthy_sessions(srv, 0)
    log = srv.log_since(mark)
    assert log.count('"WebSocket /ws?') >= 3, log  # the access log saw each of them
    for form in (TOKEN, every_byte, every_byte.lower(), TOKEN[:12]):
        assert form not in log, form


def test_redaction_rules():
    secrets = (TOKEN,)
    encoded = "".join(f"%{b:02x}" for b in TOKEN.encode())
    assert redact(f"/ws?tok%65n={TOKEN}&session=abc", secrets) == "/ws?tok%65n=***&session=abc"
    assert redact(f"/ws?x={encoded}", secrets) == "/ws?x=***"
    assert redact(f"/ws?TOKEN={encoded}", ()) == "/ws?TOKEN=***"
    assert redact("wrong token (pass ?token=...)", secrets) == "wrong token (pass ?token=...)"
    assert redact("bad key (key=abc123)", ()) == "bad key (key=***)"
    assert escape_controls("a\nb\r\x1b[0m") == "a\\nb\\r\\x1b[0m"


def _rows(data: Path, sql: str) -> int:
    db = sqlite3.connect(data / DB_NAME)
    try:
        return db.execute(sql).fetchone()[0]
    finally:
        db.close()


async def test_store_is_private_and_holds_no_empty_sessions(open_server):
    srv = open_server
    for _ in range(3):
        async with PhoneClient(srv.ws()):
            pass
    await wait_healthy_sessions(srv, 0)
    assert stat.S_IMODE((srv.data / DB_NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(srv.data.stat().st_mode) == 0o700
    empty = _rows(
        srv.data,
        "SELECT COUNT(*) FROM sessions s WHERE NOT EXISTS "
        "(SELECT 1 FROM messages m WHERE m.session_id = s.id)",
    )
    assert empty == 0
