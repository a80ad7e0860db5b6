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
- RTVI messages of the few types a voice client needs (`CLIENT_MESSAGE_TYPES`),
  checked here against pipecat's own RTVI models, so an invalid one is counted
  like any other bad message instead of being answered (and logged) by the RTVI
  processor each time. `send-text` and `send-file` are refused: they would reach
  the LLM without speech recognition and the transcript guard, and Warren's
  phone sends his voice;
- anything else (garbage, text, JSON in a text message, JSON nested deeper than
  `MAX_JSON_DEPTH`, other frame types, a non-RTVI message, malformed audio or an
  unsupported rate) is dropped and reported to `on_problem(kind, detail)`, which
  the server logs once per kind, answers with an RTVI error and counts against
  the session's limit. Text the client chose appears in `detail` only escaped
  and truncated (`client_text`), so it cannot forge a log line.
"""

from __future__ import annotations

import json
import re
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
from pipecat.processors.frameworks.rtvi import models as RTVI
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pydantic import ValidationError

MIN_RATE_HZ = 8000
MAX_RATE_HZ = 48000
MAX_CHANNELS = 2
# RTVI message types that carry audio outside the audio frame; they would bypass the checks here.
AUDIO_MESSAGE_TYPES = frozenset({"raw-audio", "raw-audio-batch"})
# Typed input that would skip speech recognition and the transcript guard.
TEXT_INPUT_TYPES = frozenset({"send-text", "send-file", "append-to-context"})
# What a voice client sends (the Pipecat SDKs' connect, disconnect and app messages), with the
# pipecat model its `data` must satisfy (None: pipecat reads it leniently itself).
CLIENT_MESSAGE_TYPES = {
    "client-ready": None,
    "disconnect-bot": None,
    "client-message": RTVI.RawClientMessageData,
}
# Nabu's clients send flat JSON; deeper nesting is an attack on the parsers behind this one.
MAX_JSON_DEPTH = 32
CLIENT_TEXT_CHARS = 40
VERSION = re.compile(r"[0-9A-Za-z.+-]{1,32}")


def client_text(value: object, limit: int = CLIENT_TEXT_CHARS) -> str:
    """Client-chosen text made safe for a log line: escaped (no newline survives), then cut
    to `limit` characters (escaping first: one astral character escapes to ten)."""
    escaped = str(value).encode("unicode_escape").decode("ascii")
    return "'" + escaped[:limit] + ("..." if len(escaped) > limit else "") + "'"


def _plain_version(data: dict | None) -> bool:
    """client-ready's optional version, which pipecat logs: a short plain version string."""
    version = (data or {}).get("version")
    return version is None or (isinstance(version, str) and VERSION.fullmatch(version) is not None)


def json_depth_exceeds(value: object, limit: int) -> bool:
    """Whether decoded JSON nests deeper than `limit` (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


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
        except (DecodeError, ValueError, TypeError, RecursionError):
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
        except RecursionError:  # the C parser gives up on very deep nesting this way
            message = None
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            return await self._problem("garbage", "a message frame whose data is not JSON")
        if message is None or json_depth_exceeds(message, MAX_JSON_DEPTH):
            return await self._problem(
                "nesting", f"a message nested more than {MAX_JSON_DEPTH} levels deep"
            )
        if not isinstance(message, dict) or message.get("label") != "rtvi-ai":
            return await self._problem("unknown", "a message that is not an RTVI message")
        kind = message.get("type")
        if not isinstance(kind, str):
            return await self._problem("rtvi_invalid", "an RTVI message without a string type")
        if kind in AUDIO_MESSAGE_TYPES:
            return await self._problem(
                "unknown", f"an RTVI {kind} message (send audio as protobuf audio frames)"
            )
        if kind in TEXT_INPUT_TYPES:
            return await self._problem(
                "typed_input", f"an RTVI {kind} message (Nabu listens: send speech as audio)"
            )
        try:
            RTVI.Message.model_validate(message)
            model = CLIENT_MESSAGE_TYPES[kind]
            if model is not None:
                model.model_validate(message.get("data"))
            if kind == "client-ready" and not _plain_version(message.get("data")):
                return await self._problem(
                    "rtvi_invalid", "an RTVI client-ready message with an unusable version"
                )
        except KeyError:
            return await self._problem(
                "rtvi_type", f"an RTVI message of a type Nabu does not take ({client_text(kind)})"
            )
        except ValidationError as e:
            fields = ", ".join(".".join(str(p) for p in err["loc"]) for err in e.errors()[:3])
            return await self._problem(
                "rtvi_invalid",
                f"an invalid RTVI {client_text(kind)} message (check {client_text(fields)})",
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
