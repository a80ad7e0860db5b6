"""A turn that is evidently finished is released after a short hold; a doubtful one is not.

The stage on its own with pipecat's test runner, pipecat's real smart-turn v3 model
and real read speech (benchmarks/clips): the whole sentence, and the same recording
stopped mid-sentence, and Piper's questions. Whether the shorter hold cuts Warren off is
measured by the paused suite (`nabu bench --suite paused`: "nabu", the question rule, against
"nabu_whole_hold" and "nabu_complete_turn").
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    InputAudioRawFrame,
    InterruptionFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from benchmarks.clips import CLIPS_DIR
from nabu_pipeline import engines
from processors.speech_release_gate import SpeechReleaseGate
from processors.turn_completion import TurnCompletion, sounds_finished
from processors.utterance_state import UtteranceState

RATE = 16000
# "and mister john dashwood had then leisure to consider how much there might be
# prudently in his power to do for them"; "then" ends at about 2.2 s.
CLIP = CLIPS_DIR / "librivox_sas01_0870.wav"
MID_SENTENCE_S = 2.25


@pytest.mark.parametrize(
    ("text", "finished"),
    [
        ("Turn on the kitchen light.", True),
        ("What's the weather tomorrow?", True),
        ("Yes.", True),
        ("Turn on the", False),
        ("Remind me to call my", False),
        ("I want to go and", False),
        ("Well, I was thinking,", False),
        ("", False),
    ],
)
def test_words_that_end_a_sentence(text, finished):
    assert sounds_finished(text) is finished


def speech(stop_s: float | None = None) -> list[InputAudioRawFrame]:
    """The recording (up to `stop_s`) and the 0.2 s of silence VAD waits for, in 20 ms frames."""
    audio, rate = sf.read(str(CLIP), dtype="int16")
    assert rate == RATE
    if stop_s is not None:
        audio = audio[: int(stop_s * RATE)]
    audio = np.concatenate([audio, np.zeros(int(0.2 * RATE), dtype=np.int16)])
    step = int(0.02 * RATE)
    return [
        InputAudioRawFrame(audio[i : i + step].tobytes(), RATE, 1)
        for i in range(0, len(audio), step)
    ]


async def completions(
    frames,
    text: str,
    utterance: UtteranceState | None = None,
    *,
    min_probability: float = 0.8,
    question_probability: float = 0.0,
) -> int:
    """How many times the stage offered a shorter hold whose judge (asked at once, as the
    gate asks when a reply is ready within the hold) said the turn is complete."""
    judges = []
    stage = TurnCompletion(
        engines.smart_turn(),
        judges.append,
        min_probability=min_probability,
        question_probability=question_probability,
        utterance=utterance,
    )
    await run_test(
        stage,
        frames_to_send=[
            VADUserStartedSpeakingFrame(),
            *frames,
            VADUserStoppedSpeakingFrame(stop_secs=0.2),
            TranscriptionFrame(text, "warren", "2026-12-02T00:00:00Z"),
        ],
        expected_down_frames=None,
    )
    return sum([await judge() for judge in judges])


async def test_a_whole_sentence_that_sounds_finished_is_released_early():
    text = (
        "And Mister John Dashwood had then leisure to consider how much there might be "
        "prudently in his power to do for them."
    )
    assert await completions(speech(), text) == 1


async def test_speech_stopped_mid_sentence_waits_the_whole_hold():
    # Words that could end a sentence: only how he said them tells they do not.
    assert await completions(speech(MID_SENTENCE_S), "And Mister John Dashwood had then.") == 0


async def test_words_that_go_on_wait_the_whole_hold():
    assert await completions(speech(), "How much there might be prudently in his power to") == 0


async def test_not_judged_while_more_of_his_speech_is_with_whisper():
    utterance = UtteranceState(awaiting=1)
    text = "And Mister John Dashwood had then leisure to consider how much to do for them."
    assert await completions(speech(), text, utterance) == 0


def piper_question(text: str, stop_after_words: int | None = None) -> list[InputAudioRawFrame]:
    """`text` in Piper's voice slowed as an older man speaks (the paused suite's questions),
    up to `stop_after_words` words if given, then VAD's 0.2 s of silence. Without Piper's
    sampling noise: with it, smart-turn gave "What is the weather like today?" 0.56-0.97
    over 20 syntheses, too near the 0.5 threshold for a test (without: 0.945 every time)."""
    from benchmarks.hearing import QUESTION_LENGTH_SCALE, _piper
    from benchmarks.suites import word_spans
    from nabu_pipeline.config import load_config

    audio = _piper(text, load_config(None), QUESTION_LENGTH_SCALE, random=False)
    if stop_after_words is not None:
        spans = word_spans(audio)
        audio = audio[: int((spans[stop_after_words - 1][2] + 0.05) * RATE)]
    audio = np.concatenate([audio, np.zeros(int(0.2 * RATE), dtype=np.int16)])
    step = int(0.02 * RATE)
    return [
        InputAudioRawFrame(audio[i : i + step].tobytes(), RATE, 1)
        for i in range(0, len(audio), step)
    ]


QUESTION_ONLY = {"min_probability": 0.0, "question_probability": 0.5}


async def test_a_whole_question_is_released_early():
    frames = piper_question("What is the weather like today?")
    assert await completions(frames, "What is the weather like today?", **QUESTION_ONLY) == 1


async def test_with_only_the_question_rule_a_finished_statement_waits_the_whole_hold():
    text = (
        "And Mister John Dashwood had then leisure to consider how much there might be "
        "prudently in his power to do for them."
    )
    assert await completions(speech(), text, **QUESTION_ONLY) == 0


async def test_a_question_that_ends_on_a_word_that_needs_more_waits():
    frames = piper_question("What is the weather like today?")
    assert await completions(frames, "What is the weather like in?", **QUESTION_ONLY) == 0


@pytest.mark.slow
async def test_a_turn_completed_as_the_interruption_lands_is_still_answered():
    """ "Eight of spades, (pause) four of clubs, seven of hearts": the transcript of the whole
    sentence both completes the turn (the release gate shortens its hold) and makes the user
    aggregator interrupt the reply prepared for "eight of spades". The interruption cancelled
    the completion stage's task while the gate swapped its release timer, and no reply was
    ever released: Warren got silence until he spoke again, and his next sentence was
    glued to this one. Whole pipeline, real Whisper, the built-in LLM server."""
    from benchmarks import report
    from benchmarks.clips import load_manifest
    from benchmarks.latency import THREE_SENTENCES, run_conversation
    from nabu_pipeline.config import load_config
    from nabu_pipeline.scripted_llm import Script, ScriptedLLMServer

    clips = [c for c in load_manifest(None) if c.name in ("cards_004", "cards_005", "goforward")]
    with ScriptedLLMServer(Script(reply=THREE_SENTENCES, ttft_s=0.35)) as server:
        config = load_config(None).with_changes(
            llm={"base_url": server.url, "provider": "openai"},
            turn={"complete_turn_probability": 0.8},
        )
        turns = await run_conversation("nabu", report.BUILDERS["nabu"], config, clips, 0)
    assert [t.voice_to_voice_s is not None for t in turns] == [True, True, True], [
        (t.clip, t.heard_transcripts) for t in turns
    ]
    assert "spades" not in " ".join(turns[2].heard_transcripts).lower()


class _CompleteOnWords(FrameProcessor):
    """Before the gate: a transcript means a complete utterance (as TurnCompletion says)."""

    def __init__(self, gate, hold_s: float):
        super().__init__()
        self._gate, self._hold_s = gate, hold_s

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            await self._gate.complete_utterance(self._hold_s)


WHOLE_HOLD_S = 3.0  # long, so a busy machine's late timers cannot blur "within" and "after"


async def utterance_after_early_release(*after) -> UtteranceState:
    """The gate releases a reply 0.1 s after his speech instead of WHOLE_HOLD_S, then `after`."""
    utterance = UtteranceState(pause_expired=False)
    gate = SpeechReleaseGate(WHOLE_HOLD_S, utterance)
    frames = [
        VADUserStartedSpeakingFrame(),
        VADUserStoppedSpeakingFrame(stop_secs=0.0),
        TranscriptionFrame("What time?", "warren", "2026-12-02T00:00:00Z"),
        TTSAudioRawFrame(b"\0\0" * 160, 16000, 1),
        SleepFrame(sleep=0.4),  # released at 0.1 s
        *after,
    ]
    down, _ = await run_test(
        Pipeline([_CompleteOnWords(gate, 0.1), gate]),
        frames_to_send=frames,
        expected_down_frames=None,
    )
    assert any(isinstance(f, TTSAudioRawFrame) for f in down)  # released before the hold
    return utterance


async def test_going_on_before_an_early_reply_is_heard_keeps_his_sentence_open():
    """ "What time? (1 s) ...is my doctor's appointment": released early, the reply had not
    yet sounded when he went on; his words must join the same sentence, as within the hold."""
    utterance = await utterance_after_early_release(
        VADUserStartedSpeakingFrame(), SleepFrame(sleep=WHOLE_HOLD_S)
    )
    assert not utterance.pause_expired


async def test_an_early_reply_heard_ends_his_sentence():
    utterance = await utterance_after_early_release(BotStartedSpeakingFrame())
    assert utterance.pause_expired


async def test_an_early_reply_never_heard_ends_his_sentence_after_the_whole_hold():
    utterance = await utterance_after_early_release(SleepFrame(sleep=0.2))
    assert not utterance.pause_expired  # 0.6 s after his speech: within the whole hold
    utterance = await utterance_after_early_release(SleepFrame(sleep=WHOLE_HOLD_S))
    assert utterance.pause_expired


class _Arrivals(FrameProcessor):
    """After the gate: when his speech ended and when each reply's audio got through."""

    def __init__(self):
        super().__init__()
        self.stopped: float | None = None
        self.audio: float | None = None
        self.stale_audio: float | None = None

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self.stopped = time.monotonic()
        elif isinstance(frame, TTSAudioRawFrame):
            if frame.audio == STALE_AUDIO and self.stale_audio is None:
                self.stale_audio = time.monotonic()
            elif frame.audio != STALE_AUDIO and self.audio is None:
                self.audio = time.monotonic()
        await self.push_frame(frame, direction)


QUESTION = "What is the weather like today?"
STALE_AUDIO = b"\1\0" * 160
"""A reply made for his earlier words ("How long?"), held when the whole question comes in."""


async def question_through_gate(
    hold_s: float, *after, before_transcript=(), earlier=()
) -> tuple[_Arrivals, int]:
    """A whole question in Piper's voice through the completion stage (question rule) and a
    gate holding `hold_s`, then `after`; returns the arrivals and how often smart-turn ran."""
    calls = []

    def predict(samples):
        calls.append(len(samples))
        return engines.smart_turn()(samples)

    # What Whisper heard of this utterance before: with earlier words, a reply to them may
    # still be on its way (the STT records each transcript as it is sent on).
    utterance = UtteranceState(pause_expired=False, transcripts=[*earlier, QUESTION])
    gate = SpeechReleaseGate(hold_s, utterance)
    stage = TurnCompletion(
        predict, lambda judge: gate.offer_early_release(0.6, judge), **QUESTION_ONLY
    )
    arrivals = _Arrivals()
    await run_test(
        Pipeline([stage, gate, arrivals]),
        frames_to_send=[
            VADUserStartedSpeakingFrame(),
            *piper_question(QUESTION),
            VADUserStoppedSpeakingFrame(stop_secs=0.2),
            *before_transcript,
            TranscriptionFrame(QUESTION, "warren", "2026-12-02T00:00:00Z"),
            *after,
        ],
        expected_down_frames=None,
    )
    return arrivals, len(calls)


async def test_a_question_whose_reply_is_ready_within_the_hold_is_judged_and_released_early():
    # The reply's audio is here at once; the session ends (releasing all) 2.5 s later.
    arrivals, judged = await question_through_gate(
        WHOLE_HOLD_S, TTSAudioRawFrame(b"\0\0" * 160, 16000, 1), SleepFrame(sleep=2.5)
    )
    assert judged == 1
    assert arrivals.audio is not None and arrivals.stopped is not None
    assert arrivals.audio - arrivals.stopped < 2.0  # 0.6 s hold, not 3 s nor the end


async def test_a_reply_ready_only_after_the_whole_hold_never_asks_smart_turn():
    """On a 2-core CPU most LLM replies: smart-turn could only add its own time."""
    arrivals, judged = await question_through_gate(
        1.0, SleepFrame(sleep=1.5), TTSAudioRawFrame(b"\0\0" * 160, 16000, 1)
    )
    assert arrivals.audio is not None
    assert judged == 0


async def test_going_on_before_the_reply_is_ready_withdraws_the_offer():
    _arrivals, judged = await question_through_gate(
        WHOLE_HOLD_S,
        VADUserStartedSpeakingFrame(),
        TTSAudioRawFrame(b"\0\0" * 160, 16000, 1),
        SleepFrame(sleep=0.5),
    )
    assert judged == 0


async def test_a_reply_to_his_earlier_words_is_not_released_by_the_shorter_hold():
    """ "How long? (0.8 s) do I boil an egg?" on a busy CPU: the reply to "How long?" was held
    when the whole question's transcript came in. Judged at once, the shorter hold released
    that stale reply before the interruption the whole question causes could drop it."""
    arrivals, judged = await question_through_gate(
        WHOLE_HOLD_S,
        SleepFrame(sleep=1.0),  # smart-turn would have answered by now
        InterruptionFrame(),  # his whole question starts a new turn: the stale reply goes
        TTSAudioRawFrame(b"\0\0" * 160, 16000, 1),  # the whole question's reply
        SleepFrame(sleep=1.5),
        before_transcript=(TTSAudioRawFrame(STALE_AUDIO, 16000, 1),),
        earlier=("What is the weather?",),
    )
    assert arrivals.stale_audio is None
    assert judged == 1
    assert arrivals.audio is not None and arrivals.stopped is not None
    assert arrivals.audio - arrivals.stopped < 2.5  # released early, not at 3 s nor the end
