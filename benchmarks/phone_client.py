"""A real Pipecat-protocol WebSocket client (tests, `nabu bench --suite concurrent`): what the
official SDKs send and receive.

Binary protobuf `Frame`s (pipecat's own frames.proto): audio frames up, RTVI
JSON in message frames both ways, audio frames down. The microphone is a task
that sends 20 ms of audio every 20 ms of wall time, silence when there is
nothing to say, as a phone does; `say()` queues a clip into it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pipecat.frames.protobufs.frames_pb2 as pb
import soundfile as sf
import soxr
from websockets.asyncio.client import ClientConnection, connect

FRAME_S = 0.02
CLIENT_VERSION = "2.1.0"  # what @pipecat-ai/client-js 1.13 announces


def load_pcm(path: Path, rate: int = 16000) -> bytes:
    """A WAV as mono int16 PCM at `rate`."""
    audio, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if file_rate != rate:
        mono = soxr.resample(mono, file_rate, rate)
    return (np.clip(mono, -1, 1) * 32767).astype(np.int16).tobytes()


def audio_frame(pcm: bytes, rate: int, channels: int = 1) -> bytes:
    return pb.Frame(
        audio=pb.AudioRawFrame(audio=pcm, sample_rate=rate, num_channels=channels)
    ).SerializeToString()


def rtvi_frame(message: dict) -> bytes:
    return pb.Frame(message=pb.MessageFrame(data=json.dumps(message))).SerializeToString()


@dataclass
class Event:
    type: str
    data: dict
    t: float


@dataclass
class PhoneClient:
    """One connection to `nabu serve`'s /ws."""

    url: str
    rate: int = 16000
    channels: int = 1
    ws: ClientConnection | None = None
    events: list[Event] = field(default_factory=list)
    bot_audio: bytearray = field(default_factory=bytearray)
    bot_audio_starts: list[float] = field(default_factory=list)
    """Wall time of the first audio frame of each burst of Nabu's speech."""
    said_until: list[float] = field(default_factory=list)
    """Wall time at which each queued clip had been fully sent."""
    close_code: int | None = None
    close_reason: str = ""

    def __post_init__(self):
        self._pending = bytearray()
        self._clip_ends: list[int] = []
        self._sent = 0
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._last_audio = 0.0
        self.session: str | None = None

    # --- connection ---------------------------------------------------------------------------

    async def open(self, *, ready: bool = True, mic: bool = True, **headers) -> PhoneClient:
        self.ws = await connect(
            self.url, max_size=None, additional_headers=headers or None, open_timeout=30
        )
        self._tasks.append(asyncio.create_task(self._receive()))
        if ready:
            await self.send_rtvi(
                {
                    "type": "client-ready",
                    "data": {"version": CLIENT_VERSION, "about": {"library": "nabu-tests"}},
                }
            )
            await self.wait_for("bot-ready", within_s=30)
            await self.wait_until(lambda: self.session_info, 10, "nabu-session message")
        if mic:
            self._tasks.append(asyncio.create_task(self._mic()))
        return self

    async def close(self) -> None:
        await self._stop_tasks()
        if self.ws is not None:
            await self.ws.close()

    async def vanish(self) -> None:
        """Drop the TCP connection without a closing handshake, as a phone losing signal."""
        await self._stop_tasks()
        assert self.ws is not None
        self.ws.transport.abort()

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def __aenter__(self) -> PhoneClient:
        return await self.open()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # --- sending ------------------------------------------------------------------------------

    async def send_rtvi(self, message: dict) -> None:
        await self.send_raw(rtvi_frame({"label": "rtvi-ai", "id": uuid.uuid4().hex[:8], **message}))

    async def send_raw(self, data: bytes | str) -> None:
        assert self.ws is not None
        await self.ws.send(data)

    def say(self, pcm: bytes) -> None:
        """Queue speech (int16 at this client's rate and channels) into the microphone."""
        self._pending.extend(pcm)
        self._clip_ends.append(self._sent + len(self._pending))

    async def _mic(self) -> None:
        step = int(self.rate * FRAME_S) * 2 * self.channels
        t0 = time.monotonic()
        n = 0
        while True:
            chunk = bytes(self._pending[:step])
            del self._pending[:step]
            chunk += bytes(step - len(chunk))
            await self.send_raw(audio_frame(chunk, self.rate, self.channels))
            self._sent += step
            while self._clip_ends and self._sent >= self._clip_ends[0]:
                self._clip_ends.pop(0)
                self.said_until.append(time.time())
            n += 1
            await asyncio.sleep(max(0.0, t0 + n * FRAME_S - time.monotonic()))

    # --- receiving ----------------------------------------------------------------------------

    async def _receive(self) -> None:
        assert self.ws is not None
        try:
            async for data in self.ws:
                now = time.time()
                frame = pb.Frame.FromString(data)
                which = frame.WhichOneof("frame")
                if which == "audio":
                    if now - self._last_audio > 1.0:
                        self.bot_audio_starts.append(now)
                    self._last_audio = now
                    self.bot_audio.extend(frame.audio.audio)
                elif which == "message":
                    message = json.loads(frame.message.data)
                    event = Event(message.get("type", ""), message.get("data") or {}, now)
                    if event.type == "server-message" and event.data.get("type") == "nabu-session":
                        self.session = event.data["session"]
                    self.events.append(event)
                self._changed.set()
        except Exception:
            pass
        finally:
            self.close_code = self.ws.close_code if self.ws.close_code is not None else 1006
            self.close_reason = self.ws.close_reason or ""
            self._changed.set()

    @property
    def session_info(self) -> dict | None:
        """Nabu's `nabu-session` server message: the id to resume with, and whether it resumed."""
        for event in self.of("server-message"):
            if event.data.get("type") == "nabu-session":
                return event.data
        return None

    @property
    def last_audio_at(self) -> float:
        """Wall time of the last audio frame received from Nabu (0.0: none yet)."""
        return self._last_audio

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.type == kind]

    def transcripts(self) -> list[str]:
        return [e.data["text"] for e in self.of("user-transcription") if e.data.get("final")]

    def bot_text(self) -> str:
        """What Nabu said, from its spoken bot-output sentences."""
        return " ".join(
            e.data["text"] for e in self.of("bot-output") if e.data.get("spoken", True)
        ).strip()

    def errors(self) -> list[str]:
        return [
            e.data.get("error", "") for e in self.events if e.type in ("error", "error-response")
        ]

    async def wait_until(self, predicate, within_s: float, what: str = "condition"):
        deadline = time.monotonic() + within_s
        while True:
            result = predicate()
            if result:
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                kinds = [e.type for e in self.events]
                raise TimeoutError(f"no {what} within {within_s}s; events: {kinds}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
            except TimeoutError:
                pass

    async def wait_for(self, kind: str, within_s: float = 30, count: int = 1) -> Event:
        events = await self.wait_until(
            lambda: len(self.of(kind)) >= count and self.of(kind), within_s, kind
        )
        return events[count - 1]

    async def turn(self, pcm: bytes, within_s: float = 60) -> None:
        """Say `pcm` and wait until Nabu has finished answering it."""
        stops = len(self.of("bot-stopped-speaking"))
        self.say(pcm)
        await self.wait_for("bot-stopped-speaking", within_s=within_s, count=stops + 1)
        # The reply's last bot-output follows the audio; let it arrive.
        await asyncio.sleep(0.3)
