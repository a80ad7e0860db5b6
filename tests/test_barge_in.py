"""Barge-in without self-interruption: Nabu's voice echoed back must not cut it off,
while Warren speaking over it stops it (within about 0.6 s on a quiet machine).

The echo is the reply audio itself mixed back into the microphone input (half volume,
150 ms later), as a phone on speaker would return it.
"""

import itertools
import re

import pytest

from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer
from nabu_pipeline.talk import talk
from transports.wav_file import EchoPath

from .conftest import CLIPS, concat_wavs

pytestmark = pytest.mark.slow

LONG = (
    "The library on Elm Street opens at nine in the morning. It has large print books "
    "near the front desk. You can borrow up to ten books at a time. They also lend audio "
    "books on small players. The staff can help you carry them to the car."
)


def _echo() -> EchoPath:
    return EchoPath(gain=0.5, delay_s=0.15, sample_rate_hz=16000)


async def test_own_voice_echo_does_not_interrupt(tmp_path, config_for):
    with ScriptedLLMServer(Script(reply=LONG, ttft_s=0.1)) as server:
        result = await talk(
            config_for(server.url), [CLIPS / "goforward.wav"], tmp_path / "o.wav", echo=_echo()
        )
    assert len(server.requests) == 1, server.user_texts()
    # Warren heard the whole reply. Mostly in one go (about 15 s); with a core kept busy,
    # what AEC3 leaves of the echo sometimes still cuts it (2 runs of 6), and with no words
    # of his in that stretch Nabu says the rest again (false_interruptions.py).
    said = " ".join(m["content"] for m in result.history if m.get("role") == "assistant")
    for sentence in re.split(r"(?<=\.) ", LONG):
        assert sentence in said, (sentence, said, result.burst_s)
    if len(result.burst_s) == 1:
        assert result.burst_s[0] > 12, result.burst_s


async def test_without_echo_cancellation_nabu_interrupts_itself(tmp_path, config_for):
    """The control: the same echo with AEC off cuts the reply short."""
    with ScriptedLLMServer(Script(reply=LONG, ttft_s=0.1)) as server:
        config = config_for(server.url, audio={"echo_cancellation": False})
        result = await talk(config, [CLIPS / "goforward.wav"], tmp_path / "o.wav", echo=_echo())
    assert result.burst_s[0] < 10 or len(result.burst_s) > 1, result.burst_s


async def test_warren_interrupts_over_the_echo(tmp_path, synth, config_for):
    stop = synth("Stop talking, please.", "stop_talking", lead_s=0.0)
    gap_s = 4.0
    clip = concat_wavs([CLIPS / "goforward.wav", gap_s, stop, 0.5], tmp_path / "interrupt.wav")
    with ScriptedLLMServer(Script(reply=LONG, ttft_s=0.1)) as server:
        result = await talk(config_for(server.url), [clip], tmp_path / "o.wav", echo=_echo())
    # When Warren started speaking, in wall-clock time.
    from benchmarks.clips import speech_bounds
    from transports.audio_file import read_pcm16

    start_of_stop = speech_bounds(read_pcm16(stop))[0]
    spoke_at = result.input_start_times[0] + 2.79 + gap_s + start_of_stop
    before = [t for t in result.write_times if t < spoke_at]
    after = [t for t in result.write_times if spoke_at <= t < spoke_at + 3.0]
    assert before, "Nabu never started answering"
    # Nabu fell silent: the last chunk of the interrupted reply went out within ~0.6 s.
    fell_silent = max(after) - spoke_at if after else 0.0
    # Chunks after that belong to the "Okay." acknowledgement, after a gap.
    gaps = [b - a for a, b in itertools.pairwise(after) if b - a > 0.3]
    if gaps:
        first_gap_at = next(a for a, b in itertools.pairwise(after) if b - a > 0.3)
        fell_silent = first_gap_at - spoke_at
    print(f"barge-in: Nabu fell silent {fell_silent:.2f}s after Warren began speaking")
    # About 0.6 s on a quiet machine; the limit only tells "he stopped it" from "it ran on"
    # (the rest of the reply is 10 s more), so that a busy CI machine cannot fail it.
    assert fell_silent < 3.0, fell_silent
