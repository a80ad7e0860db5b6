"""Pipecat's protobuf protocol for the phone app, hardened for clients Nabu does not control.

The official Pipecat clients (JavaScript, Android, iOS) speak
`ProtobufFrameSerializer`: binary protobuf frames carrying audio and RTVI
JSON messages. pipecat's serializer trusts its peer: one undecodable message
raises inside the transport's receive loop and ends the session, a client
may inject text or transcription frames (words Nabu would speak or answer as
if Warren had said them), and audio is passed on at whatever rate the client
claims, which Whisper and the VAD would misread.

This subclass accepts from clients only audio and RTVI messages:
- audio at 8-48 kHz, mono or stereo, becomes mono at the pipeline's rate
  (soxr, one stream resampler per session, rebuilt if the rate changes);
- anything else (garbage, text, JSON in a text message, other frame types,
  a non-RTVI message, malformed audio or an unsupported rate) is dropped and
  reported to `on_problem(kind, detail)`, which the server logs once per kind,
  answers with an RTVI error and counts against the session's limit.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import numpy as np
import pipecat.frames.protobufs.frames_pb2 as frame_protos
from google.protobuf.message import DecodeError
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
)
from pipecat.serializers.protobuf import ProtobufFrameSerializer

MIN_RATE_HZ = 8000
MAX_RATE_HZ = 48000
MAX_CHANNELS = 2
# RTVI message types that carry audio outside the audio frame; they would bypass the checks here.
AUDIO_MESSAGE_TYPES = frozenset({"raw-audio", "raw-audio-batch"})

ProblemCallback = Callable[[str, str], Awaitable[None]]


class PhoneFrameSerializer(ProtobufFrameSerializer):
    """ProtobufFrameSerializer that drops what a client must not send and resamples its audio."""

    def __init__(self, *, sample_rate_hz: int, on_problem: ProblemCallback | None = None):
        super().__init__()
        self._rate = sample_rate_hz
        self._on_problem = on_problem
        self._resampler = None
        self._resampler_rate = 0
        self.rates_seen: set[int] = set()
        """Sample rates the client has sent (for the session's log line)."""

    async def serialize(self, frame: Frame) -> str | bytes | None:
        # The output transport hands over its End/Cancel frames too; they have no wire form.
        if isinstance(frame, (EndFrame, CancelFrame)):
            return None
        return await super().serialize(frame)

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if isinstance(data, str):
            return await self._problem("text", "a text message (the protocol is binary protobuf)")
        try:
            proto = frame_protos.Frame.FromString(data)
        except (DecodeError, ValueError, TypeError):
            return await self._problem("garbage", "a message that is not a protobuf Frame")
        which = proto.WhichOneof("frame")
        if which == "audio":
            return await self._audio(proto.audio)
        if which == "message":
            return await self._message(proto.message.data)
        return await self._problem(
            "unknown", f"a {which or 'empty'} frame (clients may send only audio and RTVI messages)"
        )

    async def _message(self, data: str) -> Frame | None:
        try:
            message = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return await self._problem("garbage", "a message frame whose data is not JSON")
        if not isinstance(message, dict) or message.get("label") != "rtvi-ai":
            return await self._problem("unknown", "a message that is not an RTVI message")
        if message.get("type") in AUDIO_MESSAGE_TYPES:
            return await self._problem(
                "unknown",
                f"an RTVI {message['type']} message (send audio as protobuf audio frames)",
            )
        return InputTransportMessageFrame(message=message)

    async def _audio(self, audio) -> Frame | None:
        rate, channels, pcm = int(audio.sample_rate), int(audio.num_channels), audio.audio
        if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
            return await self._problem(
                "sample_rate",
                f"audio at {rate} Hz (send 16-bit PCM at {MIN_RATE_HZ}-{MAX_RATE_HZ} Hz; "
                f"{self._rate} Hz mono is best)",
            )
        if not 1 <= channels <= MAX_CHANNELS:
            return await self._problem(
                "channels", f"audio with {channels} channels (send mono or stereo)"
            )
        if not pcm or len(pcm) % (2 * channels):
            return await self._problem(
                "audio", f"an audio frame of {len(pcm)} bytes (not whole 16-bit samples)"
            )
        self.rates_seen.add(rate)
        if channels == 2:
            samples = np.frombuffer(pcm, dtype=np.int16).reshape(-1, 2).astype(np.int32)
            pcm = (samples.sum(axis=1) // 2).astype(np.int16).tobytes()
        if rate != self._rate:
            if self._resampler is None or self._resampler_rate != rate:
                self._resampler = create_stream_resampler(quality="HQ")
                self._resampler_rate = rate
            pcm = await self._resampler.resample(pcm, rate, self._rate)
            if not pcm:  # the resampler is still filling its window
                return None
        return InputAudioRawFrame(audio=pcm, sample_rate=self._rate, num_channels=1)

    async def _problem(self, kind: str, detail: str) -> None:
        if self._on_problem is not None:
            await self._on_problem(kind, detail)
        return None
