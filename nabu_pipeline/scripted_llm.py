"""A small OpenAI-protocol chat server with a scripted reply, for tests and the benchmark.

It speaks the real protocol (`POST /v1/chat/completions`, JSON or SSE
streaming, `GET /v1/models`) so Nabu's real `openai` client talks to it as it
would to OpenAI, Ollama or vLLM. Time to first token, tokens per second and
the reply are set by the caller; every request is recorded so a test can
check what the LLM was asked. Faults can be scripted for reliability tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

DEFAULT_REPLY = (
    "The kettle takes about three minutes to boil. "
    "Let it cool for a moment before you pour. "
    "Would you like me to set a reminder?"
)


@dataclass
class Script:
    """What the server does for each request."""

    reply: str | Callable[[list[dict]], str] = DEFAULT_REPLY
    ttft_s: float = 0.35
    tokens_per_s: float = 60.0
    fault: str | None = None
    """None, or one of: 429, 429-once, 500, hang, malformed, cut."""
    retry_after_s: float | None = None


@dataclass
class Recorded:
    messages: list[dict]
    body: dict
    at: float


@dataclass
class ScriptedLLMServer:
    """Runs in a background thread; `url` is the base_url to give an OpenAI client."""

    script: Script = field(default_factory=Script)
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._faults_served = 0

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
        app = web.Application(client_max_size=8 << 20)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
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

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        messages = body.get("messages", [])
        self.requests.append(Recorded(messages=messages, body=body, at=time.time()))
        script = self.script
        fault = script.fault
        if (fault == "429-once" and self._faults_served == 0) or fault == "429":
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
            await asyncio.sleep(3600)
        reply = script.reply(messages) if callable(script.reply) else script.reply
        model = body.get("model", "scripted")
        if not body.get("stream"):
            # A whole reply takes as long to generate as its stream would.
            generation_s = len(_tokens(reply)) / script.tokens_per_s if script.tokens_per_s else 0
            await asyncio.sleep(script.ttft_s + generation_s)
            return web.json_response(_completion(model, reply))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await asyncio.sleep(script.ttft_s)
        tokens = _tokens(reply)
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        for i, tok in enumerate(tokens):
            if fault == "cut" and i >= len(tokens) // 2:
                # Drop the connection mid-reply, as a crashed upstream would.
                request.transport.close()
                return resp
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
        return resp


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
