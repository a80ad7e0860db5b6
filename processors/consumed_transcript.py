"""Closing Warren's turn when a processor has answered his words itself.

A stop phrase or "say that again" is handled before the user aggregator and
must not reach the LLM or the history. Swallowing the TranscriptionFrame
would leave the user turn open (the turn-end strategy waits for a
transcript) until its 5 s safety timeout, so a blank, finalized transcript
is passed on instead. pipecat 1.14's turn-stop strategies count any non-empty
text (" " included) as "a transcript arrived", while the user aggregator
ignores text that is blank after strip(): the turn closes at once, with
nothing added to the context and nothing for the LLM to answer.
"""

from dataclasses import replace

from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start.transcription_user_turn_start_strategy import (
    TranscriptionUserTurnStartStrategy,
)


def consumed(frame: TranscriptionFrame) -> TranscriptionFrame:
    return replace(frame, text=" ", finalized=True, result=None)


def nothing_heard(user_id: str, timestamp: str) -> TranscriptionFrame:
    """What the STT says when Whisper found no words: the turn closes now, answered by nothing."""
    return TranscriptionFrame(" ", user_id, timestamp, finalized=True)


class WordsStartATurn(TranscriptionUserTurnStartStrategy):
    """pipecat's transcription turn start, for transcripts with words in them.

    A blank transcript is a turn being closed, not begun: when it came after the
    turn had already closed (a slow transcript on a busy CPU), pipecat's strategy
    opened a new turn with it and that turn's interruption cut off what the
    stage that consumed it had just asked Nabu to say ("Did you say ...?",
    "Okay.").
    """

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, TranscriptionFrame) and not frame.text.strip():
            return ProcessFrameResult.CONTINUE
        return await super().process_frame(frame)
