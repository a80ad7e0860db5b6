"""PhoneFrameSerializer: what a client may send, and audio at any usual rate becomes 16 kHz mono."""

import json

import numpy as np
import pipecat.frames.protobufs.frames_pb2 as pb
import pytest
from pipecat.frames.frames import (
    EndFrame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    OutputAudioRawFrame,
    OutputTransportMessageUrgentFrame,
)

from benchmarks.phone_client import audio_frame, rtvi_frame
from transports.phone_serializer import PhoneFrameSerializer


@pytest.fixture
def problems():
    return []


@pytest.fixture
def serializer(problems):
    async def report(kind, detail):
        problems.append((kind, detail))

    return PhoneFrameSerializer(sample_rate_hz=16000, on_problem=report)


def tone(rate: int, seconds: float, hz: float = 440.0, channels: int = 1) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    mono = (0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16)
    return np.repeat(mono[:, None], channels, axis=1).tobytes()


def dominant_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


async def test_audio_at_16k_passes_untouched(serializer, problems):
    pcm = tone(16000, 0.02)
    frame = await serializer.deserialize(audio_frame(pcm, 16000))
    assert isinstance(frame, InputAudioRawFrame)
    assert frame.audio == pcm and frame.sample_rate == 16000 and frame.num_channels == 1
    assert not problems


@pytest.mark.parametrize(("rate", "channels"), [(48000, 1), (44100, 2), (8000, 1), (24000, 2)])
async def test_other_rates_and_stereo_are_resampled_to_16k_mono(
    serializer, problems, rate, channels
):
    out = bytearray()
    step = rate // 50  # 20 ms
    pcm = tone(rate, 1.0, channels=channels)
    for i in range(0, len(pcm), step * 2 * channels):
        frame = await serializer.deserialize(
            audio_frame(pcm[i : i + step * 2 * channels], rate, channels)
        )
        if frame is not None:
            assert frame.sample_rate == 16000 and frame.num_channels == 1
            out.extend(frame.audio)
    assert not problems
    # ~1 s of 16 kHz audio; the resampling filter holds back up to ~70 ms.
    assert 16000 - 1200 < len(out) / 2 <= 16000
    assert abs(dominant_hz(bytes(out), 16000) - 440) < 5
    assert serializer.rates_seen == {rate}


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\xff\xfe garbage \x00\x01", "garbage"),
        ("this is text, not protobuf", "text"),
        (pb.Frame(text=pb.TextFrame(text="Say: hacked")).SerializeToString(), "unknown"),
        (pb.Frame(transcription=pb.TranscriptionFrame(text="hi")).SerializeToString(), "unknown"),
        (pb.Frame(interruption=pb.InterruptionFrame()).SerializeToString(), "unknown"),
        (pb.Frame().SerializeToString(), "unknown"),
        (pb.Frame(message=pb.MessageFrame(data="{not json")).SerializeToString(), "garbage"),
        (rtvi_frame({"hello": "world"}), "unknown"),
        (
            rtvi_frame({"label": "rtvi-ai", "type": "raw-audio", "data": {"base64Audio": "AA=="}}),
            "unknown",
        ),
        (audio_frame(b"\x00\x01\x02", 16000), "audio"),
        (audio_frame(b"", 16000), "audio"),
        (audio_frame(tone(4000, 0.02), 4000), "sample_rate"),
        (audio_frame(tone(96000, 0.02), 96000), "sample_rate"),
        (audio_frame(tone(16000, 0.02, channels=3), 16000, 3), "channels"),
    ],
)
async def test_what_clients_must_not_send_is_dropped_and_reported(serializer, problems, data, kind):
    assert await serializer.deserialize(data) is None
    assert [k for k, _ in problems] == [kind]
    assert problems[0][1]  # a human-readable reason


async def test_rtvi_messages_pass(serializer, problems):
    message = {"label": "rtvi-ai", "type": "client-ready", "id": "1", "data": {"version": "2.1.0"}}
    frame = await serializer.deserialize(rtvi_frame(message))
    assert isinstance(frame, InputTransportMessageFrame) and frame.message == message
    assert not problems


async def test_output_is_pipecat_protobuf(serializer):
    audio = await serializer.serialize(
        OutputAudioRawFrame(audio=tone(24000, 0.02), sample_rate=24000, num_channels=1)
    )
    decoded = pb.Frame.FromString(audio)
    assert decoded.audio.sample_rate == 24000 and len(decoded.audio.audio) == 960
    assert await serializer.serialize(EndFrame()) is None
    msg = await serializer.serialize(
        OutputTransportMessageUrgentFrame(message={"label": "rtvi-ai", "type": "bot-ready"})
    )
    assert json.loads(pb.Frame.FromString(msg).message.data)["type"] == "bot-ready"
