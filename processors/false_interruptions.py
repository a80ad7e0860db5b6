"""Nabu's reply taken up again when what cut it off held no words of Warren's.

VAD stops Nabu the moment it hears speech over a reply (barge-in must be quick: "stop"
is heard within about half a second), before anyone knows whose speech it was. On a
loudspeaker with a busy CPU, what AEC3 leaves of Nabu's own voice is sometimes enough
(the own-voice echo test, one core kept busy: 2 of 6 runs); a cough or a door can do it
on any device. When that stretch then proves to hold no words of his (Whisper heard
nothing, or only Nabu's own, which `echo_words` takes out), the reply was cut for
nothing and Warren was left with half an answer and silence. So the sentences that had
not finished playing are said again, from the start of the one cut off: LiveKit Agents
does the same (`resume_false_interruption`); pipecat 1.14 has no such thing, and its
output transport cannot pause, only drop what it queued, so the sentences are spoken
again rather than resumed mid-word.
"""

from __future__ import annotations

import collections
import time

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_output import BaseOutputTransport

RESUME_WITHIN_S = 15.0
"""A cut older than this is not taken up again: the moment has passed. Long enough for
the VAD's stop and Whisper on a busy CPU (2 s for 1.5 s of audio was seen)."""
KEEP_UNPLAYED_S = 60.0
"""A sentence synthesised this long ago and never played belongs to no reply now."""
TURN_INTERRUPTION_S = 1.0
"""An interruption this soon after a user turn began is that turn's (the user aggregator
broadcasts the turn's start, then the interruption)."""


class UnplayedSentences(BaseObserver):
    """Sentences the TTS has made that the output transport has not yet finished playing.

    The output transport passes a sentence's text frame on once its audio has played, so
    a sentence cut off half-way is still unplayed.
    """

    # Every push of a sentence is read (the output transport's is the one that counts),
    # nothing else: `NabuPipelineWorker` then wakes this observer for no other frame.
    pushed_frame_types = (TTSTextFrame,)

    def __init__(self, clock=time.monotonic, **kwargs):
        super().__init__(**kwargs)
        self._clock = clock
        self._pending: collections.OrderedDict[int, tuple[float, str]] = collections.OrderedDict()
        self._seen: collections.deque[int] = collections.deque(maxlen=128)

    async def on_push_frame(self, data: FramePushed):
        frame = data.frame
        if not isinstance(frame, TTSTextFrame) or not frame.text.strip():
            return
        if isinstance(data.source, BaseOutputTransport):
            self._pending.pop(frame.id, None)
        elif frame.id not in self._seen:
            self._seen.append(frame.id)
            self._pending[frame.id] = (self._clock(), frame.text)

    def take(self) -> list[str]:
        """The unplayed sentences, oldest first; forgotten once taken."""
        since = self._clock() - KEEP_UNPLAYED_S
        texts = [text for at, text in self._pending.values() if at >= since]
        self._pending.clear()
        return texts


class FalseInterruptionResume(FrameProcessor):
    """After the STT and `echo_words`: says again what an interruption without words cut off."""

    def __init__(self, unplayed: UnplayedSentences, clock=time.monotonic, **kwargs):
        super().__init__(**kwargs)
        self._unplayed = unplayed
        self._clock = clock
        self._cut: tuple[float, list[str]] | None = None
        self._turn_began: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, UserStartedSpeakingFrame):
            self._turn_began = self._clock()
        elif isinstance(frame, InterruptionFrame):
            # Every interruption ends what was playing. Only one that a user turn began can
            # be undone; any other (the app's Stop button, a help answer, "Okay." to a stop)
            # ended the reply on purpose, and cancels a cut still waiting for its transcript.
            cut, began = self._unplayed.take(), self._turn_began
            self._turn_began = None
            by_his_turn = began is not None and self._clock() - began < TURN_INTERRUPTION_S
            self._cut = (self._clock(), cut) if cut and by_his_turn else None
        elif isinstance(frame, TranscriptionFrame) and self._cut is not None:
            at, sentences = self._cut
            self._cut = None
            if frame.text.strip() or self._clock() - at > RESUME_WITHIN_S:
                return  # his words (or too late): the interruption was his
            logger.info(
                f"{self}: an interruption with no words of his cut Nabu off "
                f"{self._clock() - at:.1f}s ago; saying again {len(sentences)} sentence(s)"
            )
            await self.push_frame(TTSSpeakFrame(" ".join(sentences)))
