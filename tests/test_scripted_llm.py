"""The scripted OpenAI-protocol server stays quiet when a client cancels mid-request.

Nabu cancels requests all the time (a speculative answer dropped, an interrupted sentence);
the server that stands in for OpenAI in tests and benchmarks must not fill their logs with
tracebacks when it does.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer


def slow(seconds: float, value):
    """A scripted answer that takes `seconds` to make (the client gives up meanwhile)."""

    def make(_arg):
        time.sleep(seconds)
        return value

    return make


async def cancel_after(seconds: float, url: str, **request) -> None:
    async with httpx.AsyncClient(timeout=10) as client:

        async def read() -> None:
            async with client.stream("POST", url, **request) as response:
                async for _ in response.aiter_bytes(4800):
                    await asyncio.sleep(0.05)  # a slow reader, as a TTS playing in real time

        task = asyncio.create_task(read())
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
LONG_TEXT = " ".join(["word"] * 3000)
SPEECH = {"model": "tts-1", "voice": "alloy", "input": LONG_TEXT, "response_format": "pcm"}


@pytest.mark.parametrize(
    ("endpoint", "body", "script"),
    [
        # Cancelled before the response started (while the answer was being made).
        ("chat/completions", CHAT, Script(reply=slow(0.6, "Hello there."))),
        ("audio/speech", SPEECH, Script(speak=slow(0.6, b"\0\0" * 24000))),
        # Cancelled mid-stream.
        ("chat/completions", CHAT, Script(ttft_s=0.05, tokens_per_s=20)),
        ("audio/speech", SPEECH, Script()),
    ],
    ids=["chat-before-start", "speech-before-start", "chat-mid-stream", "speech-mid-stream"],
)
async def test_a_cancelled_request_logs_no_traceback(caplog, endpoint, body, script):
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    with ScriptedLLMServer(script) as server:
        await cancel_after(0.3, f"{server.url}/{endpoint}", json=body)
        await asyncio.sleep(1.0)  # the server notices and finishes the request
        kind = "speech" if "speech" in endpoint else None
        served = server.audio_requests if kind else server.requests
        assert len(served) == 1  # the request did arrive
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
