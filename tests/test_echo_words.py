"""Nabu's own words heard back are taken out of a transcript; Warren's own words stay."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import TranscriptionFrame
from pipecat.tests.utils import run_test

from nabu_pipeline.config import NabuConfig, SafetyConfig
from nabu_pipeline.pipeline import build_matcher
from processors.echo_canceller import EchoReference
from processors.echo_words import EchoWords, SpokenWords, opening_echo, without_echo
from processors.whisper_stt import TranscriptEvidence

LIBRARY = (
    "The library on Elm Street opens at nine in the morning. It has large print books near "
    "the front desk. The staff can help you carry them to the car."
)


def runs_of(*sentences: str) -> set[tuple[str, str]]:
    spoken = SpokenWords()
    for s in sentences:
        spoken.said(s)
    return spoken.runs()


@pytest.mark.parametrize(
    ("heard", "kept"),
    [
        # Transcripts Whisper made over Nabu's reply in the help-over-reply test.
        ("at nine in the morning. Help me.", "Help me."),
        (
            "It's open tonight. Help me more. I've fallen.",
            "It's open tonight. Help me more. I've fallen.",
        ),
        ("that night. Help me. I've fallen.", "that night. Help me. I've fallen."),
        ("It has large", ""),
        # Misheard echo: every word Nabu's, or one like it (CI, with one core kept busy).
        ("The library one, Elm.", ""),
        ("The library on Elm Street opens at 9 in the...", ""),
        ("books near the front desk", ""),
        ("the front desk, stop.", "stop."),
        # His words that Nabu also said, one at a time, stay.
        ("Help!", "Help!"),
        ("the car, help me", "the car, help me"),
        ("Can you help me?", "Can you help me?"),
        ("Yes, the car.", "Yes, the car."),
        ("What time does it open?", "What time does it open?"),
        ("Is the library open?", "Is the library open?"),
    ],
)
def test_runs_of_nabus_words_leave_and_his_stay(heard, kept):
    assert without_echo(heard, runs_of(LIBRARY)) == kept


def test_nothing_said_takes_nothing_out():
    assert without_echo("at nine in the morning", set()) == "at nine in the morning"


def test_only_what_nabu_said_lately_counts():
    now = [0.0]
    spoken = SpokenWords(clock=lambda: now[0])
    spoken.said("The kitchen light is on.")
    now[0] = 100.0
    spoken.said("Okay.")
    assert without_echo("is the kitchen light on", spoken.runs()) == "is the kitchen light on"


def test_a_replys_opening_words_are_known_until_the_next_reply():
    spoken = SpokenWords()
    spoken.said("The library on Elm Street opens at nine in the morning.")
    spoken.said("It has large print books near the front desk.")
    opening = spoken.opening()
    assert opening[:4] == ["the", "library", "on", "elm"] and len(opening) == 12
    # Transcripts Whisper made of a reply's first moments (CI, one core kept busy).
    assert opening_echo("the library.", opening)
    assert opening_echo("Library", opening)
    assert not opening_echo("library the", opening)  # not in Nabu's order
    assert not opening_echo("the car", opening)
    assert not opening_echo("the library on Elm", opening)  # three or more: without_echo's
    spoken.reply_ended()
    spoken.said("Okay.")
    assert spoken.opening() == ["okay"]
    assert not opening_echo("the library.", spoken.opening())


async def _heard_at_a_replys_onset(reply: str, heard: str) -> str:
    """What EchoWords passes on of `heard`, begun 0.5 s into `reply` while its echo was heard."""
    now = [100.0]
    reference = EchoReference(clock=lambda: now[0])
    spoken = SpokenWords(clock=lambda: now[0])
    spoken.said(reply)
    reference.burst_started_at = 100.0
    reference.echo_heard_at = 101.0
    now[0] = 102.5  # 0.5 s in, 1 s of audio, 1 s of Whisper
    evidence = TranscriptEvidence(
        no_speech_prob=0.1, avg_logprob=-0.5, compression_ratio=1.0, audio_s=1.0,
        rms_dbfs=-30.0, stt_s=1.0,
    )  # fmt: skip
    stage = EchoWords(spoken, reference, build_matcher(NabuConfig()), SafetyConfig())
    down, _ = await run_test(
        stage,
        frames_to_send=[TranscriptionFrame(heard, "", "", finalized=True, result=evidence)],
        expected_down_frames=None,
    )
    return " ".join(f.text for f in down if isinstance(f, TranscriptionFrame))


async def test_a_replys_opening_words_heard_back_alone_are_nabus():
    assert (await _heard_at_a_replys_onset(LIBRARY, "the library.")).strip() == ""
    assert await _heard_at_a_replys_onset(LIBRARY, "The car.") == "The car."


async def test_his_answer_to_a_question_is_his_even_in_its_words():
    # To "Do you need help?" he may answer before the question's echo has died away.
    assert await _heard_at_a_replys_onset("Do you need help?", "Need help.") == "Need help."
    assert await _heard_at_a_replys_onset("Yes, the kitchen light is on.", "Yes.") == "Yes."


async def test_a_misheard_word_left_of_nabus_echo_is_nabus_unless_it_is_his():
    reply = "They also lend audio books on small players."
    assert (await _heard_at_a_replys_onset(reply, "also lend audio book.")).strip() == ""
    assert await _heard_at_a_replys_onset(reply, "also lend audio books, stop.") == "stop."
    assert await _heard_at_a_replys_onset(reply, "on small players. Help!") == "Help!"
    assert (
        await _heard_at_a_replys_onset(reply, "also lend audio books. What time?") == "What time?"
    )
