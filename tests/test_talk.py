"""`nabu talk` end to end: real Whisper, real Piper, a real OpenAI-protocol server.

The reply audio is transcribed back with Whisper and must say what the server
answered; the server must have received the user's words.
"""

import os
from pathlib import Path

import pytest
import soundfile as sf
from whisper_normalizer.english import EnglishTextNormalizer

from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer
from nabu_pipeline.talk import talk

from .conftest import CLIPS, concat_wavs, transcribe
from .helpers import nabu

NORMALISE = EnglishTextNormalizer()
pytestmark = pytest.mark.slow

FIRST = "The front door is locked. The porch light is on."
SECOND = "Your daughter Mary called this morning. She will visit on Sunday."
LONG = " ".join(
    f"Here is sentence number {w} of a long story about the garden."
    for w in ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
)


def words(text: str) -> set[str]:
    return set(NORMALISE(text).split())


def said(model, path: Path) -> str:
    return NORMALISE(transcribe(model, path))


def test_cli_two_turns_with_history(tmp_path, whisper_tiny):
    replies = iter([FIRST, SECOND])
    with ScriptedLLMServer(Script(reply=lambda _m: next(replies), ttft_s=0.2)) as server:
        out = tmp_path / "reply.wav"
        env = {**os.environ, "NABU_LLM_BASE_URL": server.url}
        proc = nabu(
            "talk",
            "--input",
            str(CLIPS / "goforward.wav"),
            "--input",
            str(CLIPS / "sb_spk2_snt2.wav"),
            "--output",
            str(out),
            timeout=240,
            env=env,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The LLM heard Warren's words, and the second request carries the first turn.
    asked = server.user_texts()
    assert len(asked) == 2, asked
    assert {"go", "forward", "meters"} <= words(asked[0])
    assert {"joy", "living"} <= words(asked[1])
    second = server.requests[1].messages
    assert any(m["role"] == "assistant" and "front door" in m["content"] for m in second)
    assert any(m["role"] == "user" and "forward" in m["content"].lower() for m in second)
    assert second[0]["role"] == "system" and "Warren" in second[0]["content"]
    # What Nabu said is what the server answered, in order.
    heard = said(whisper_tiny, out)
    assert {"front", "door", "locked", "porch"} <= set(heard.split()), heard
    assert {"daughter", "mary", "sunday"} <= set(heard.split()), heard
    assert heard.index("door") < heard.index("mary")
    # The printout has transcripts, replies and per-stage latencies.
    for label in (
        "You said:",
        "Nabu said:",
        "turn_end=",
        "stt=",
        "llm_ttft=",
        "first_sentence=",
        "tts_first_audio=",
        "voice_to_voice=",
    ):
        assert label in proc.stdout, proc.stdout
    assert "LLM: gpt-4o-mini at http://127.0.0.1" in proc.stderr


async def test_stop_phrase_cancels_speech_and_never_reaches_llm(
    tmp_path, synth, whisper_tiny, config_for
):
    stop = synth("Stop.", "stop")
    clip = concat_wavs([CLIPS / "goforward.wav", 3.0, stop, 0.5], tmp_path / "q_then_stop.wav")
    after = synth("Tell me about the moon.", "moon")
    replies = iter([LONG, "The moon is bright tonight."])
    with ScriptedLLMServer(Script(reply=lambda _m: next(replies), ttft_s=0.1)) as server:
        result = await talk(config_for(server.url), [clip, after], tmp_path / "out.wav")
    asked = server.user_texts()
    assert len(asked) == 2, asked  # the question, then the moon; never "stop"
    assert "moon" in NORMALISE(asked[1])
    assert not any("stop" in NORMALISE(str(m.get("content", ""))) for m in result.history)
    # The long reply (about 40 s of speech) was cut off, then "Okay" was said, then the moon.
    # On a busy machine Whisper may still be on the question when "stop" is heard: then
    # the reply is stopped before its first word, which is as right.
    assert len(result.burst_s) in (2, 3), result.burst_s
    *cut, ack, _moon = result.burst_s
    assert sum(cut) < 12 and ack < 1.5, result.burst_s
    audio, rate = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    ack_wav = tmp_path / "ack.wav"
    start = sum(cut)  # out.wav is the bursts back to back
    sf.write(str(ack_wav), audio[int(start * rate) : int((start + ack) * rate)], rate)
    assert NORMALISE(transcribe(whisper_tiny, ack_wav)) in ("okay", "ok"), result.burst_s
    heard = said(whisper_tiny, tmp_path / "out.wav")
    assert "ten" not in heard.split() and "moon is bright" in heard, heard


async def test_say_that_again_and_slower_repeat_without_llm(
    tmp_path, synth, whisper_tiny, config_for
):
    again = synth("Say that again.", "again")
    slower = synth("Please speak slower.", "slower")
    with ScriptedLLMServer(Script(reply=FIRST, ttft_s=0.1)) as server:
        config = config_for(server.url)
        result = await talk(config, [CLIPS / "goforward.wav", again, slower], tmp_path / "out.wav")
    assert len(server.requests) == 1, server.user_texts()
    heard = said(whisper_tiny, tmp_path / "out.wav")
    assert heard.count("front door") == 3, heard
    assert len(result.burst_s) == 3, (result.burst_s, heard)
    normal, repeat, slow = result.burst_s
    assert abs(repeat - normal) < 0.3 * normal
    assert slow > normal * 1.1, result.burst_s
    assert not any("again" in str(m.get("content", "")).lower() for m in result.history)


async def test_answers_without_any_llm(tmp_path, synth, whisper_tiny, config_for):
    time_q = synth("What time is it?", "time")
    other = synth("Tell me about the moon.", "moon")
    config = config_for(None)
    assert not config.llm.is_configured
    await talk(config, [time_q, other], tmp_path / "out.wav")
    heard = said(whisper_tiny, tmp_path / "out.wav")
    assert "it is" in heard or "it's" in heard, heard
    assert any(w in heard for w in ("morning", "afternoon", "evening", "night")), heard
    assert "reach" in heard and "assistant" in heard, heard


async def test_llm_error_becomes_spoken_apology(tmp_path, whisper_tiny, config_for):
    with ScriptedLLMServer(Script(fault="500")) as server:
        result = await talk(config_for(server.url), [CLIPS / "goforward.wav"], tmp_path / "o.wav")
    assert server.requests, "the LLM was never asked"
    heard = said(whisper_tiny, tmp_path / "o.wav")
    assert "sorry" in heard and "reach" in heard, heard
    assert result.turns and result.turns[0]["voice_to_voice_s"] is not None


async def test_speech_starts_on_first_sentence_while_llm_still_writes(tmp_path, config_for):
    reply = (
        "The pharmacy opens at nine. It closes at six on weekdays. "
        "On Saturdays it closes at noon, and it is shut on Sundays."
    )
    # About 25 tokens at 8 tokens/s: the whole reply takes ~3 s to write.
    with ScriptedLLMServer(Script(reply=reply, ttft_s=0.2, tokens_per_s=8)) as server:
        result = await talk(config_for(server.url), [CLIPS / "goforward.wav"], tmp_path / "o.wav")
    turn = result.turns[0]
    first_audio_after_request = (
        turn["llm_ttft_s"] + turn["first_sentence_s"] + turn["tts_first_audio_s"]
    )
    assert turn["llm_total_s"] > 2.5, turn
    assert first_audio_after_request < turn["llm_total_s"] - 1.0, turn
