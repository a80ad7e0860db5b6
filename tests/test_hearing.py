"""No hallucinated words: noise, music and speech Whisper cannot make out never reach the LLM.

The real pipeline (Silero VAD, Whisper base, the transcript guard) hears each sound
in one conversation; the LLM is a real OpenAI-protocol server that records every
request. Speech played backwards is speech-like sound with no words: Whisper
decodes it into fluent English, which the guard must catch.
"""

from pathlib import Path

import pytest

from benchmarks.clips import load_manifest
from benchmarks.suites import nospeech_suite
from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer
from nabu_pipeline.talk import talk
from transports.audio_file import write_pcm16

pytestmark = pytest.mark.slow

SOUNDS = ("silence", "fan_noise", "music", "breathing", "jfk_reversed", "something_reversed")


def _sounds(tmp_path: Path) -> list[Path]:
    clips = load_manifest()
    by_name = {c.name: c for c in nospeech_suite(clips)}
    something = next(c for c in clips if c.name == "something")
    by_name["something_reversed"] = something.__class__(
        **{**something.__dict__, "samples": something.samples[::-1].copy()}
    )
    paths = []
    for name in SOUNDS:
        path = tmp_path / f"{name}.wav"
        write_pcm16(path, by_name[name].samples.tobytes(), 16000)
        paths.append(path)
    return paths


async def test_noise_music_and_backwards_speech_never_reach_the_llm(tmp_path, config_for):
    with ScriptedLLMServer(Script(reply="I heard something.", ttft_s=0.1)) as server:
        result = await talk(config_for(server.url), _sounds(tmp_path), tmp_path / "out.wav")
    assert server.requests == [], server.user_texts()
    assert not [m for m in result.history if m.get("role") == "user"], result.history


# A clear clip made "a little doubtful" by thresholds above its score (about -0.1 to -0.4),
# so the read-back path runs on real audio every time.
READ_BACK = {"avg_logprob_min": -0.01, "confirm_logprob_min": -1.5}


async def _read_back(tmp_path, config_for, synth, whisper_tiny, answer: str):
    from .conftest import CLIPS, transcribe

    reply = synth(answer, answer.strip(".").lower())
    with ScriptedLLMServer(Script(reply="The front door is locked.", ttft_s=0.1)) as server:
        result = await talk(
            config_for(server.url, guard=READ_BACK),
            [CLIPS / "something.wav", reply],
            tmp_path / "out.wav",
        )
    return server, result, transcribe(whisper_tiny, tmp_path / "out.wav").lower()


async def test_doubtful_words_are_read_back_and_yes_sends_them(
    tmp_path, config_for, synth, whisper_tiny
):
    server, result, heard = await _read_back(tmp_path, config_for, synth, whisper_tiny, "Yes.")
    assert "did you say" in heard and "something" in heard, heard
    assert server.user_texts() == ["Go somewhere and do something"], server.user_texts()
    assert "front door" in heard, heard
    users = [m["content"] for m in result.history if m.get("role") == "user"]
    assert users == ["Go somewhere and do something"], result.history


async def test_no_to_a_read_back_asks_again_and_sends_nothing(
    tmp_path, config_for, synth, whisper_tiny
):
    server, _, heard = await _read_back(tmp_path, config_for, synth, whisper_tiny, "No.")
    assert "did you say" in heard and "say it again" in heard, heard
    assert server.requests == [], server.user_texts()
