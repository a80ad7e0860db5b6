"""A small OpenAI-protocol server with scripted answers, for tests and the benchmark.

It speaks the real protocol (`POST /v1/chat/completions`, JSON or SSE
streaming, `GET /v1/models`, and the audio endpoints `POST
/v1/audio/transcriptions` and `POST /v1/audio/speech`) so Nabu's real `openai`
client and pipecat's OpenAI STT/TTS services talk to it as they would to
OpenAI, Ollama or vLLM. Time to first token, tokens per second and the reply
are set by the caller; every request is recorded so a test can check what was
asked. Faults can be scripted for reliability tests, per request if need be
(`Script.fault` may be a function of the request's messages); `refused_url()`
is an endpoint with nothing listening.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web

DEFAULT_REPLY = (
    "The kettle takes about three minutes to boil. "
    "Let it cool for a moment before you pour. "
    "Would you like me to set a reminder?"
)


FAULTS = ("429", "429-once", "500", "hang", "malformed", "cut", "stall", "empty")
SPEECH_RATE_HZ = 24000  # what OpenAI's /v1/audio/speech returns as response_format=pcm


@dataclass(frozen=True)
class ToolCall:
    """A function call the scripted model makes instead of answering in words."""

    name: str
    arguments: dict


@dataclass
class Script:
    """What the server does for each request."""

    reply: str | Callable[[list[dict]], str | list[ToolCall]] = DEFAULT_REPLY
    """The answer, or a function of the request's messages returning one; a list of
    ToolCalls makes the model call those tools (the next request carries their results)."""
    ttft_s: float = 0.35
    tokens_per_s: float = 60.0
    fault: str | Callable[[list[dict]], str | None] | None = None
    """None, one of FAULTS, or a function of the request's messages returning one (or None):
    429 (always), 429-once (the first request only), 500, hang (no answer at all), malformed
    (bad SSE data mid-reply), cut (connection dropped mid-reply), stall (silent mid-reply),
    empty (a stream with no words)."""
    retry_after_s: float | None = None
    """Retry-After header sent with a 429."""
    transcript: str | Callable[[bytes], str] = "What time is it?"
    """What /v1/audio/transcriptions answers (or a function of the uploaded WAV)."""
    speak: Callable[[str], bytes] | None = None
    """Text -> 16-bit mono PCM at 24 kHz for /v1/audio/speech; None: a 440 Hz tone per word."""
    audio_fault: str | None = None
    """None or 500: the audio endpoints fail."""
    tool_call: Callable[[list[dict]], tuple[str, dict] | None] | None = None
    """A function of the request's messages returning (tool name, arguments) to call that tool
    instead of replying (streamed as OpenAI does: one tool_calls delta, finish "tool_calls"),
    or None to reply as usual."""


@dataclass
class Recorded:
    messages: list[dict]
    body: dict
    at: float


@dataclass
class AudioRequest:
    """One request to an audio endpoint."""

    endpoint: str
    """transcriptions or speech."""
    fields: dict
    """Form fields (transcriptions) or the JSON body (speech)."""
    audio: bytes = b""
    """The uploaded file (transcriptions)."""
    at: float = 0.0


def refused_url() -> str:
    """An OpenAI-protocol base URL on which nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def tone_pcm(text: str, rate: int = SPEECH_RATE_HZ) -> bytes:
    """A 440 Hz beep per word (0.15 s each, 0.05 s apart): stand-in speech for the TTS endpoint."""
    t = np.arange(int(0.15 * rate)) / rate
    beep = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    gap = np.zeros(int(0.05 * rate), dtype=np.int16)
    words = max(1, len(text.split()))
    return np.concatenate([np.concatenate([beep, gap]) for _ in range(words)]).tobytes()


@dataclass
class ScriptedLLMServer:
    """Runs in a background thread; `url` is the base_url to give an OpenAI client."""

    script: Script = field(default_factory=Script)
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    audio_requests: list[AudioRequest] = field(default_factory=list)

    def __post_init__(self):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._faults_served = 0
        self.faults_seen: list[str | None] = []
        """The fault applied to each chat request, in order."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def user_texts(self) -> list[str]:
        """The last user message of each request, in order."""
        out = []
        for r in self.requests:
            users = [m for m in r.messages if m.get("role") == "user"]
            if users:
                content = users[-1].get("content")
                if isinstance(content, list):
                    content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
                out.append(str(content))
        return out

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> ScriptedLLMServer:
        self._thread = threading.Thread(target=self._run, name="scripted-llm", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("scripted LLM server did not start")
        return self

    def stop(self) -> None:
        if self._loop and self._runner:
            if self._stopping is not None:
                self._loop.call_soon_threadsafe(self._stopping.set)  # ends hanging requests
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            try:
                fut.result(5)
            except Exception:
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=8 << 20)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/speech", self._speech)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, self.port)
        self._loop.run_until_complete(site.start())
        sock = site._server.sockets[0]  # the port chosen when port=0
        self.port = sock.getsockname()[1]
        self._started.set()
        self._loop.run_forever()

    # --- handlers --------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "scripted", "object": "model"}]}
        )

    async def _hang(self, seconds: float = 3600.0) -> None:
        """Wait, as a hung upstream would, until the server stops."""
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _transcriptions(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        audio = upload.file.read() if hasattr(upload, "file") else b""
        fields = {k: v for k, v in form.items() if k != "file"}
        self.audio_requests.append(
            AudioRequest("transcriptions", fields=fields, audio=audio, at=time.time())
        )
        if self.script.audio_fault == "500":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        script = self.script.transcript
        text = script(audio) if callable(script) else script
        return web.json_response({"text": text})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.audio_requests.append(AudioRequest("speech", fields=body, at=time.time()))
        if self.script.audio_fault == "500":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        text = str(body.get("input", ""))
        speak = self.script.speak or tone_pcm
        pcm = await asyncio.to_thread(speak, text)
        resp = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        step = SPEECH_RATE_HZ // 10 * 2  # 100 ms chunks, as a streaming TTS sends them
        try:
            await resp.prepare(request)
            for i in range(0, len(pcm), step):
                await resp.write(pcm[i : i + step])
            await resp.write_eof()
        except ConnectionError:
            pass  # the client cancelled (an interrupted sentence): nothing to answer
        return resp

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        messages = body.get("messages", [])
        self.requests.append(Recorded(messages=messages, body=body, at=time.time()))
        script = self.script
        fault = script.fault(messages) if callable(script.fault) else script.fault
        if fault == "429-once" and self._faults_served > 0:
            fault = None
        self.faults_seen.append(fault)
        if fault in ("429-once", "429"):
            self._faults_served += 1
            headers = {}
            if script.retry_after_s is not None:
                headers["retry-after"] = str(script.retry_after_s)
            return web.json_response(
                {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded"}},
                status=429,
                headers=headers,
            )
        if fault == "500":
            return web.json_response(
                {"error": {"message": "boom", "type": "server_error"}}, status=500
            )
        if fault == "hang":
            await self._hang()
            return web.Response(status=503)
        model = body.get("model", "scripted")
        call = script.tool_call(messages) if script.tool_call else None
        if call is not None:
            return await self._tool_calls(request, body, [ToolCall(*call)], model)
        reply = script.reply(messages) if callable(script.reply) else script.reply
        if isinstance(reply, list):
            return await self._tool_calls(request, body, reply, model)
        if not body.get("stream"):
            # A whole reply takes as long to generate as its stream would.
            generation_s = len(_tokens(reply)) / script.tokens_per_s if script.tokens_per_s else 0
            await asyncio.sleep(script.ttft_s + generation_s)
            return web.json_response(_completion(model, reply))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            await resp.prepare(request)
            await self._stream_reply(request, resp, script, fault, reply, model)
        except ConnectionError:
            pass  # the client cancelled (or gave up on a broken stream): nothing to answer
        return resp

    async def _tool_calls(self, request, body: dict, calls: list[ToolCall], model: str):
        await asyncio.sleep(self.script.ttft_s)
        made = [
            {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in calls
        ]
        if not body.get("stream"):
            completion = _completion(model, "")
            completion["choices"][0]["message"] = {
                "role": "assistant",
                "content": None,
                "tool_calls": made,
            }
            completion["choices"][0]["finish_reason"] = "tool_calls"
            return web.json_response(completion)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        for i, call in enumerate(made):
            # As OpenAI streams them: the name first, then the arguments in pieces.
            head = {**call, "index": i, "function": {**call["function"], "arguments": ""}}
            delta = {"tool_calls": [head]}
            if i == 0:
                delta["role"] = "assistant"
            await resp.write(_sse(_chunk(cid, model, delta)))
            arguments = call["function"]["arguments"]
            for j in range(0, len(arguments), 16):
                piece = {"index": i, "function": {"arguments": arguments[j : j + 16]}}
                await resp.write(_sse(_chunk(cid, model, {"tool_calls": [piece]})))
        await resp.write(_sse(_chunk(cid, model, {}, finish="tool_calls")))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _stream_reply(self, request, resp, script: Script, fault, reply: str, model: str):
        await asyncio.sleep(script.ttft_s)
        tokens = [] if fault == "empty" else _tokens(reply)
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        for i, tok in enumerate(tokens):
            if fault == "stall" and i == len(tokens) // 2:
                await self._hang()
                return
            if fault == "cut" and i >= len(tokens) // 2:
                # Drop the connection mid-reply, as a crashed upstream would.
                request.transport.close()
                return
            if fault == "malformed" and i == len(tokens) // 2:
                await resp.write(b"data: {not json\n\n")
                continue
            await resp.write(
                _sse(
                    _chunk(
                        cid, model, {"content": tok} if i else {"role": "assistant", "content": tok}
                    )
                )
            )
            if script.tokens_per_s > 0:
                await asyncio.sleep(1.0 / script.tokens_per_s)
        await resp.write(_sse(_chunk(cid, model, {}, finish="stop")))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()


def _tokens(text: str) -> list[str]:
    """Split like a BPE tokenizer roughly would: words with their leading space."""
    out, word = [], ""
    for ch in text:
        if ch == " " and word:
            out.append(word)
            word = ch
        else:
            word += ch
    if word:
        out.append(word)
    return out


def _chunk(cid: str, model: str, delta: dict, finish: str | None = None) -> dict:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _sse(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _completion(model: str, reply: str) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": len(_tokens(reply)),
            "total_tokens": 10,
        },
    }
