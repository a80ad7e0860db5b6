"""A cut of Nabu's reply that held no words of Warren's is undone: the rest is said again.

The stage on its own, with pipecat's test runner: the sentences come through the
`UnplayedSentences` observer as a TTS and an output transport push them. The whole
pipeline (real AEC3, Whisper, Piper, echo) is in `test_barge_in.py`.
"""

from __future__ import annotations

from pipecat.frames.frames import (
    InterruptionFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams

from processors.false_interruptions import (
    RESUME_WITHIN_S,
    FalseInterruptionResume,
    UnplayedSentences,
)

REPLY = [
    "The library on Elm Street opens at nine in the morning.",
    "It has large print books near the front desk.",
    "You can borrow up to ten books at a time.",
]


async def reply_played_up_to(unplayed: UnplayedSentences, played: int) -> None:
    """The TTS makes every sentence of REPLY; the output plays the first `played` of them."""
    tts, gate = FrameProcessor(name="tts"), FrameProcessor(name="gate")
    output = BaseOutputTransport(TransportParams(audio_out_enabled=True))
    frames = [TTSTextFrame(text, text_type="sentence") for text in REPLY]
    for frame in frames:
        await unplayed.on_push_frame(
            FramePushed(tts, gate, frame, FrameDirection.DOWNSTREAM, 0, first_push=True)
        )
        await unplayed.on_push_frame(
            FramePushed(gate, output, frame, FrameDirection.DOWNSTREAM, 0, first_push=False)
        )
    for frame in frames[:played]:
        await unplayed.on_push_frame(
            FramePushed(output, tts, frame, FrameDirection.DOWNSTREAM, 0, first_push=False)
        )


async def said_again(heard: str, *, clock=None) -> list[str]:
    unplayed = UnplayedSentences()
    await reply_played_up_to(unplayed, played=1)
    stage = FalseInterruptionResume(unplayed, **({"clock": clock} if clock else {}))
    down, _ = await run_test(
        stage,
        frames_to_send=[
            # As pipecat's user aggregator broadcasts a turn that cuts Nabu off.
            UserStartedSpeakingFrame(),
            InterruptionFrame(),
            SleepFrame(0.1),
            TranscriptionFrame(heard, "", "", finalized=True),
            SleepFrame(0.1),
        ],
        expected_down_frames=None,
    )
    return [f.text for f in down if isinstance(f, TTSSpeakFrame)]


async def test_a_cut_with_no_words_says_the_rest_again_from_the_sentence_cut_off():
    # " " is what the STT sends when Whisper heard nothing, and what echo_words leaves
    # of a transcript that was all Nabu's own words.
    assert await said_again(" ") == [" ".join(REPLY[1:])]


async def test_a_cut_with_his_words_is_his():
    assert await said_again("Stop.") == []
    assert await said_again("What time does it close?") == []


async def test_a_cut_long_ago_is_not_taken_up_again():
    now = [0.0]

    def clock() -> float:
        now[0] += RESUME_WITHIN_S + 1  # every look at the clock is this much later
        return now[0]

    assert await said_again(" ", clock=clock) == []


async def test_nothing_unplayed_nothing_said_again():
    unplayed = UnplayedSentences()
    await reply_played_up_to(unplayed, played=len(REPLY))
    assert unplayed.take() == []
    down, _ = await run_test(
        FalseInterruptionResume(unplayed),
        frames_to_send=[InterruptionFrame(), TranscriptionFrame(" ", "", "", finalized=True)],
        expected_down_frames=None,
    )
    assert not [f for f in down if isinstance(f, TTSSpeakFrame)]


async def test_a_reply_stopped_on_purpose_is_not_said_again():
    """The app's Stop button interrupts with no user turn; a cough after it says nothing."""
    unplayed = UnplayedSentences()
    await reply_played_up_to(unplayed, played=1)
    down, _ = await run_test(
        FalseInterruptionResume(unplayed),
        frames_to_send=[
            InterruptionFrame(),
            SleepFrame(0.1),
            UserStartedSpeakingFrame(),
            InterruptionFrame(),
            TranscriptionFrame(" ", "", "", finalized=True),
        ],
        expected_down_frames=None,
    )
    assert not [f for f in down if isinstance(f, TTSSpeakFrame)]
