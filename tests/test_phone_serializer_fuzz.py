"""Fuzzing PhoneFrameSerializer: whatever a client sends, it is a frame or a reported problem.

Hypothesis generates raw bytes, protobuf frames of every kind with odd audio
parameters, and RTVI-shaped JSON (nested, wrong types, control characters,
the message types Nabu refuses) for a fixed time budget. Invariants: the
serializer never raises; what it lets through is 16-bit mono audio at the
pipeline's rate or an RTVI message of a type Nabu takes; everything else is
reported exactly once, with a one-line detail of bounded length.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pipecat.frames.protobufs.frames_pb2 as pb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipecat.frames.frames import InputAudioRawFrame, InputTransportMessageFrame

from transports.phone_serializer import CLIENT_MESSAGE_TYPES, PhoneFrameSerializer

BUDGET_S = 20.0  # per strategy group: a small fixed time budget, so CI stays predictable
MAX_EXAMPLES = 3000
RATE = 16000

RTVI_TYPES = [
    *CLIENT_MESSAGE_TYPES,
    "send-text",
    "send-file",
    "append-to-context",
    "raw-audio",
    "llm-function-call-result",
    "ui-event",
    "dtmf",
    "x\n00:00 | ERROR | forged",
]
json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=60)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
rtvi_message = st.fixed_dictionaries(
    {"label": st.sampled_from(["rtvi-ai", "rtvi-ai", "other"])},
    optional={
        "type": st.one_of(st.sampled_from(RTVI_TYPES), json_leaf),
        "id": st.one_of(st.text(max_size=20), st.integers()),
        "data": st.one_of(
            json_value,
            st.fixed_dictionaries(
                {}, optional={"t": json_leaf, "d": json_value, "version": json_leaf}
            ),
        ),
    },
)
message_data = st.one_of(
    rtvi_message.map(json.dumps),
    json_value.map(json.dumps),
    st.integers(1, 5000).map(lambda n: "[" * n),
    st.integers(1, 200).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.text(max_size=200),
)
audio_frame = st.builds(
    lambda pcm, rate, ch: pb.Frame(
        audio=pb.AudioRawFrame(audio=pcm, sample_rate=rate, num_channels=ch)
    ).SerializeToString(),
    st.one_of(  # random bytes, and whole 16-bit stereo frames of up to 20 ms at 48 kHz
        st.binary(max_size=2000),
        st.integers(1, 960).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    ),
    st.one_of(st.sampled_from([8000, 16000, 22050, 44100, 48000]), st.integers(0, 2**31 - 1)),
    st.one_of(st.sampled_from([1, 2]), st.integers(0, 2**31 - 1)),
)
other_frame = st.builds(
    lambda kind, text: pb.Frame(**{kind: getattr(pb, f"{kind.capitalize()}Frame")(text=text)}),
    st.sampled_from(["text", "transcription"]),
    st.text(max_size=50),
).map(lambda f: f.SerializeToString())
wire_message = st.one_of(
    st.binary(max_size=3000),
    st.text(max_size=200),
    audio_frame,
    other_frame,
    message_data.map(lambda d: pb.Frame(message=pb.MessageFrame(data=d)).SerializeToString()),
)

FIGURES: dict[str, Counter] = {}


def _check(data: bytes | str, stats: Counter) -> None:
    problems: list[tuple[str, str]] = []

    async def report(kind: str, detail: str) -> None:
        problems.append((kind, detail))

    serializer = PhoneFrameSerializer(sample_rate_hz=RATE, on_problem=report)
    frame = asyncio.run(serializer.deserialize(data))
    stats["examples"] += 1
    if isinstance(frame, InputAudioRawFrame):
        assert frame.sample_rate == RATE and frame.num_channels == 1
        assert len(frame.audio) % 2 == 0 and not problems
        stats["audio"] += 1
    elif isinstance(frame, InputTransportMessageFrame):
        assert frame.message.get("label") == "rtvi-ai"
        assert frame.message.get("type") in CLIENT_MESSAGE_TYPES and not problems
        stats["rtvi passed"] += 1
    else:
        assert frame is None
        # None without a problem only while the resampler fills its first window.
        assert len(problems) == 1 or (not problems and serializer.rates_seen), problems
        for kind, detail in problems:
            assert "\n" not in detail and "\r" not in detail, detail
            assert len(detail) < 300, detail
            stats[f"problem:{kind}"] += 1


def _fuzz(name: str, strategy) -> Counter:
    stats: Counter = Counter()
    started = time.monotonic()

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(data):
        if time.monotonic() - started > BUDGET_S:
            return  # budget spent: let hypothesis wind down
        _check(data, stats)

    run()
    stats["seconds"] = round(time.monotonic() - started)
    FIGURES[name] = stats
    print(f"\nfuzz {name}: {dict(stats)}")
    return stats


def test_fuzz_wire_messages():
    stats = _fuzz("wire", wire_message)
    assert stats["examples"] > 200, stats


def test_fuzz_rtvi_messages():
    frames = message_data.map(
        lambda d: pb.Frame(message=pb.MessageFrame(data=d)).SerializeToString()
    )
    stats = _fuzz("rtvi", frames)
    assert stats["examples"] > 200, stats
    assert stats["rtvi passed"] > 0 and stats["problem:nesting"] > 0, stats


def test_client_text_is_short_whatever_characters_it_holds():
    """Found by the fuzz run: cut before escaping, 26 astral characters made a 300-character
    log detail."""
    from transports.phone_serializer import CLIENT_TEXT_CHARS, client_text

    shown = client_text("0" + "\U00010000" * 40 + "\n00:00 | ERROR | forged")
    assert len(shown) <= CLIENT_TEXT_CHARS + 5 and "\n" not in shown, shown
