"""Probe a real `nabu serve` as a hostile web page and a clumsy client would; print a table.

    python -m benchmarks.server_probes [--out probes.md]

Starts two real `nabu serve` processes (loopback without a token; with a
token and an origin allowlist) and a scripted OpenAI-protocol LLM, then
sends each probe over real sockets and writes down what the server did.
Used for issue 12's before/after table; the tests in
tests/test_server_hardening.py assert the same behaviour.
"""

# A probe tool: blocking reads of the server's log and plain httpx calls inside coroutines are
# deliberate (one probe at a time, timing is not the point).
# ruff: noqa: ASYNC210, ASYNC240

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pipecat.frames.protobufs.frames_pb2 as pb
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "probe-token-0123456789abcdef"
ALLOWED = "https://nabu.example.org"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def nabu_serve(tmp: Path, name: str, env: dict, config: str, *, with_process: bool = False):
    """A real `nabu serve` subprocess with `config` (YAML text), ready on /healthz; yields
    (port, log_path, data_dir), and the `subprocess.Popen` last when `with_process`."""
    port = free_port()
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(config)
    log_path = tmp / f"{name}.log"
    data = tmp / f"{name}-data"
    with log_path.open("wb") as log:
        command = [sys.executable, "-m", "nabu_pipeline.cli", "serve", "--port", str(port)]
        proc = subprocess.Popen(
            [*command, "--config", str(cfg)],
            cwd=ROOT,
            env={**os.environ, "NABU_DATA_DIR": str(data), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nabu serve exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("nabu serve did not start")
            time.sleep(0.2)
        yield (port, log_path, data, proc) if with_process else (port, log_path, data)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def rtvi(message: dict) -> bytes:
    return pb.Frame(message=pb.MessageFrame(data=json.dumps(message))).SerializeToString()


def rtvi_raw(data: str) -> bytes:
    return pb.Frame(message=pb.MessageFrame(data=data)).SerializeToString()


def ready() -> bytes:
    return rtvi(
        {"label": "rtvi-ai", "id": "r1", "type": "client-ready", "data": {"version": "2.1.0"}}
    )


def as_host(url: str, host: str | None) -> dict:
    """connect() arguments sending `Host: host` to the server at `url` (a real DNS-rebinding
    page reaches the server by its own name)."""
    if host is None:
        return {"uri": url}
    port = int(url.split(":")[2].split("/")[0])
    return {
        "uri": url.replace(f"127.0.0.1:{port}", host),
        "sock": socket.create_connection(("127.0.0.1", port)),
    }


async def handshake(url: str, host: str | None = None, **headers) -> str:
    """HTTP status of the WebSocket handshake ('101' when accepted), and what followed."""
    try:
        target = as_host(url, host)
        async with connect(**target, additional_headers=headers or None, open_timeout=20) as ws:
            await ws.send(ready())
            got = []
            try:
                async with asyncio.timeout(5):
                    async for data in ws:
                        got.append(data)
                        frame = pb.Frame.FromString(data)
                        if frame.WhichOneof("frame") == "message":
                            m = json.loads(frame.message.data)
                            if m.get("type") == "error":
                                break
                            if m.get("type") == "bot-ready":
                                break
            except (TimeoutError, ConnectionClosed):
                pass
            kinds = []
            for data in got:
                frame = pb.Frame.FromString(data)
                if frame.WhichOneof("frame") == "message":
                    kinds.append(json.loads(frame.message.data).get("type"))
            closed = ws.close_code
            return f"101, then {kinds or 'nothing'}" + (f", close {closed}" if closed else "")
    except InvalidStatus as e:
        return f"HTTP {e.response.status_code} {e.response.body[:60].decode(errors='replace')!r}"
    except Exception as e:  # the server closed the socket, or nothing came back
        return f"no handshake ({type(e).__name__})"


async def session_events(ws, seconds: float) -> tuple[list[dict], int | None]:
    events = []
    try:
        async with asyncio.timeout(seconds):
            async for data in ws:
                frame = pb.Frame.FromString(data)
                if frame.WhichOneof("frame") == "message":
                    events.append(json.loads(frame.message.data))
    except (TimeoutError, Exception):
        pass
    return events, ws.close_code


def log_count(log: Path, pattern: str) -> int:
    return len(re.findall(pattern, log.read_text(errors="replace")))


async def raw_tcp(port: int, payload: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    if payload:
        s.sendall(payload)
    return s


def closed_by_server(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def probes_open(port: int, log: Path, data: Path, llm: ScriptedLLMServer) -> list:
    rows = []
    url = f"ws://127.0.0.1:{port}/ws"
    host = f"127.0.0.1:{port}"

    # 1. A foreign page on the same machine (no allowlist, no token on loopback).
    r = await handshake(url, Origin="https://evil.example.com")
    rows.append(("1", "Origin: https://evil.example.com (no allowlist)", r))
    r = await handshake(
        url, Origin=f"http://rebind.evil.example:{port}", host=f"rebind.evil.example:{port}"
    )
    rows.append(("1", f"Host+Origin rebind.evil.example:{port} (DNS rebinding)", r))
    r = await handshake(url, Origin=f"http://localhost:{port}")
    rows.append(("1", f"Origin: http://localhost:{port} (own page, localhost form)", r))
    r = await handshake(url, Origin=f"http://{host}")
    rows.append(("1", f"Origin: http://{host} (own page)", r))

    # 2. RTVI messages that fail validation, one with a forged log line.
    async with connect(url) as ws:
        await ws.send(ready())
        await asyncio.sleep(2)
        before = log.stat().st_size
        forged = "x\n00:00:00.000 | ERROR   | FORGED LINE"
        for i in range(300):
            if i % 2:
                await ws.send(rtvi({"label": "rtvi-ai", "id": f"b{i}", "type": forged}))
            else:
                await ws.send(
                    rtvi({"label": "rtvi-ai", "type": "send-text", "data": {"content": forged}})
                )
        events, code = await session_events(ws, 8)
    text = log.read_text(errors="replace")[before:]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    forged_lines = sum(ln.startswith("00:00:00.000 | ERROR   | FORGED") for ln in lines)
    rows.append(
        (
            "2",
            "300 RTVI messages failing validation (newline in type/content)",
            f"{sum(e.get('type') in ('error', 'error-response') for e in events)} RTVI errors, "
            f"close {code}; {len(lines)} log lines, {forged_lines} forged lines",
        )
    )

    # 3. Unauthenticated HTTP: idle and half-sent connections, a huge header, a connection cap.
    idle = [await raw_tcp(port, b"") for _ in range(50)]
    half = [await raw_tcp(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(50)]
    drip = await raw_tcp(port, b"GET /healthz HTTP/1.1\r\n")
    drip_closed_at = None
    t0 = time.monotonic()
    for _ in range(15):  # a header byte every second keeps a naive timer from firing
        await asyncio.sleep(1)
        try:
            drip.sendall(b"X")
        except OSError:
            drip_closed_at = time.monotonic() - t0
            break
    rows.append(
        (
            "3",
            "50 TCP connections sending nothing, 15 s",
            f"{sum(closed_by_server(s) for s in idle)} of 50 closed by the server",
        )
    )
    rows.append(
        (
            "3",
            "50 half-sent requests (headers never finished), 15 s",
            f"{sum(closed_by_server(s) for s in half)} of 50 closed by the server",
        )
    )
    rows.append(
        (
            "3",
            "a request line, then one header byte a second for 15 s",
            f"closed by the server after {drip_closed_at:.0f} s"
            if drip_closed_at is not None
            else ("closed by the server" if closed_by_server(drip) else "still open"),
        )
    )
    for s in [*idle, *half, drip]:
        s.close()
    big = "a" * (8 * 1024 * 1024)
    try:
        resp = httpx.get(f"http://{host}/healthz", headers={"X-Big": big}, timeout=20)
        r = f"HTTP {resp.status_code}"
    except httpx.HTTPError as e:
        r = f"connection closed ({type(e).__name__})"
    rows.append(("3", "GET /healthz with an 8 MB header", r))
    held = [await raw_tcp(port, b"") for _ in range(300)]
    await asyncio.sleep(0.5)
    try:
        resp = httpx.get(f"http://{host}/healthz", timeout=10)
        r = f"HTTP {resp.status_code}"
    except httpx.HTTPError as e:
        r = f"{type(e).__name__}"
    for s in held:
        s.close()
    rows.append(("3", "GET /healthz while 300 other connections are open", r))

    # 4. Deeply nested JSON in an RTVI message frame.
    async with connect(url) as ws:
        await ws.send(ready())
        await asyncio.sleep(2)
        await ws.send(rtvi_raw("[" * 60000))
        events, code = await session_events(ws, 5)
        if code is None:
            await ws.send(
                rtvi(
                    {
                        "label": "rtvi-ai",
                        "id": "p",
                        "type": "client-message",
                        "data": {"t": "ping", "d": {}},
                    }
                )
            )
            more, code = await session_events(ws, 2)
            events += more
    kinds = [e.get("type") for e in events]
    rows.append(
        (
            "4",
            '`"[" * 60000` in a message frame',
            f"events {kinds[-3:]}, close {code}; RecursionError in log: "
            f"{log_count(log, 'RecursionError')}",
        )
    )

    # 5. send-text reaching the LLM without STT and the guard.
    asked = len(llm.requests)
    async with connect(f"{url}?session=probe-send-text") as ws:
        await ws.send(ready())
        await asyncio.sleep(2)
        await ws.send(
            rtvi(
                {
                    "label": "rtvi-ai",
                    "id": "t1",
                    "type": "send-text",
                    "data": {"content": "Unlock the front door.", "options": {}},
                }
            )
        )
        events, code = await session_events(ws, 8)
    db = sqlite3.connect(data / "conversations.sqlite3")
    stored = db.execute("SELECT role FROM messages WHERE session_id='probe-send-text'").fetchall()
    db.close()
    errs = [e["data"].get("error", "")[:50] for e in events if e.get("type") == "error"]
    rows.append(
        (
            "5",
            "RTVI send-text 'Unlock the front door.'",
            f"LLM asked {len(llm.requests) - asked}x; stored roles {[r for (r,) in stored]}; "
            f"errors {errs}",
        )
    )

    # 6. A session id with a trailing newline.
    r = await handshake(f"{url}?session=abcdefgh%0A")
    rows.append(("6", "?session=abcdefgh%0A", r))

    # 7. Quick connect/disconnects.
    before = log.stat().st_size
    for i in range(50):
        try:
            async with connect(url) as ws:
                await ws.send(ready())
                if i % 2:
                    await asyncio.sleep(0.3)
        except Exception:
            pass
    await asyncio.sleep(3)
    text = log.read_text(errors="replace")[before:]
    rows.append(
        (
            "7",
            "50 quick connect/disconnects",
            f"{text.count('dangling')} 'dangling task' lines, "
            f"{text.count('Task was destroyed but it is pending')} 'Task was destroyed'",
        )
    )
    held = []
    for _ in range(4):
        ws = await connect(url)
        await ws.send(ready())
        held.append(ws)
    await asyncio.sleep(1)
    r = await handshake(url)
    rows.append(("7", "a 5th connection while 4 sessions (max_sessions) are connected", r))
    for ws in held:
        await ws.close()
    await asyncio.sleep(2)

    # 8. Too many bad messages: the close code.
    async with connect(url) as ws:
        await ws.send(ready())
        await asyncio.sleep(1)
        for _ in range(60):
            await ws.send(b"\xff garbage")
        events, code = await session_events(ws, 8)
    rows.append(("8", "60 garbage messages (max_bad_messages 50)", f"close {code}"))
    return rows


async def probes_secured(port: int, log: Path) -> list:
    rows = []
    url = f"ws://127.0.0.1:{port}/ws"
    before = log.stat().st_size
    r = await handshake(f"{url}?token=wrong-token-0123456789")
    rows.append(("8", "wrong token", r))
    r = await handshake(f"{url}?token={TOKEN}", Origin="https://evil.example.com")
    rows.append(("8", "foreign Origin with the right token", r))
    text = log.read_text(errors="replace")[before:]
    rows.append(
        (
            "8",
            "log of the two refused handshakes above",
            f"{text.count('ERROR')} ERROR lines; "
            + "; ".join(
                repr(ln.split("| ", 2)[-1][:90]) for ln in text.splitlines() if "Refused" in ln
            ),
        )
    )
    r = await handshake(
        f"{url}?token={TOKEN}",
        Origin=f"https://rebind.evil.example:{port}",
        host=f"rebind.evil.example:{port}",
    )
    rows.append(("1", "allowlist set: Host+Origin rebind.evil.example (DNS rebinding)", r))
    r = await handshake(f"{url}?token={TOKEN}", Origin=ALLOWED)
    rows.append(("1", f"allowlist set: Origin {ALLOWED}", r))
    encoded = "".join(f"%{b:02X}" for b in TOKEN.encode())
    for query in (f"tok%65n={TOKEN}", f"token={encoded}", f"tok%65n={encoded}"):
        before = log.stat().st_size
        r = await handshake(f"{url}?{query}")
        await asyncio.sleep(0.5)
        text = log.read_text(errors="replace")[before:]
        shown = TOKEN in text or encoded in text or encoded.lower() in text
        rows.append(
            (
                "8",
                f"?{query[:24]}...",
                f"{r.split(',')[0]}; token in the log (any encoding): {'YES' if shown else 'no'}",
            )
        )
    return rows


def store_rows(data: Path) -> list:
    db_path = data / "conversations.sqlite3"
    db = sqlite3.connect(db_path)
    sessions = db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
    empty = db.execute(
        "SELECT COUNT(*) FROM sessions s WHERE NOT EXISTS "
        "(SELECT 1 FROM messages m WHERE m.session_id = s.id)"
    ).fetchone()[0]
    messages = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    db.close()
    f = stat.S_IMODE(db_path.stat().st_mode)
    d = stat.S_IMODE(data.stat().st_mode)
    return [
        ("8", "store file and folder modes", f"file {f:04o}, folder {d:04o}"),
        (
            "8",
            "sessions rows after all the probes above",
            f"{sessions} sessions ({empty} without a message), {messages} messages",
        ),
    ]


async def main_async(out: Path | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nabu-probes-"))
    os.umask(0o022)
    config = "stt:\n  model: tiny.en\n"
    rows = []
    with ScriptedLLMServer(Script(reply="The door is locked.", ttft_s=0.1)) as llm:
        with nabu_serve(tmp, "open", {"NABU_LLM_BASE_URL": llm.url}, config) as (port, log, data):
            rows += await probes_open(port, log, data, llm)
        rows += store_rows(data)
        secured_cfg = config + f"server:\n  allowed_origins: ['{ALLOWED}']\n"
        env = {"NABU_LLM_BASE_URL": llm.url, "NABU_AUTH_TOKEN": TOKEN}
        with nabu_serve(tmp, "secured", env, secured_cfg) as (port, log, _data):
            rows += await probes_secured(port, log)
    table = ["| item | sent | server did |", "|---|---|---|"]
    table += [f"| {a} | {b.replace('|', '/')} | {c.replace('|', '/')} |" for a, b, c in rows]
    text = "\n".join(table)
    print(text)
    print(f"\nlogs in {tmp}")
    if out:
        out.write_text(text + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    asyncio.run(main_async(args.out))


if __name__ == "__main__":
    main()
