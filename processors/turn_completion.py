"""Turn completion: a reply need not wait out the whole pause hold when Warren has finished.

The SpeechReleaseGate holds every reply until `turn.pause_tolerance_s` (1.5 s) of
silence, because Warren pauses mid-sentence for up to 1.2 s. Most of his turns
are not paused: the hold then only delays the answer. Two kinds of evidence that
he has finished, both required:

- how he said it: pipecat's smart-turn v3 on the last 8 s of his audio at the
  moment VAD stops (prosody: a falling, final intonation against a held, unfinished
  one), ~35 ms on one core;
- what he said: the transcript does not end on a word that needs more ("turn on
  the", "and", "my") or on a comma.

Two rules, each with its own smart-turn threshold (0 turns a rule off):
- any turn (`turn.complete_turn_probability`, off by default: on the paused suite
  "Go forward. (0.8 s) Ten meters." sounds finished and was answered into his pause);
- a question (`turn.complete_question_probability`): Whisper wrote a question mark,
  which it does from the wording and the rising or final intonation of a whole
  question. A question is what Warren most often asks and least often goes on from.
  For this rule smart-turn runs only once such a transcript is in, so it never
  shares the cores with Whisper's decode.

With a rule met, the gate releases the reply `turn.complete_turn_hold_s` after his
speech (SpeechReleaseGate.complete_utterance) instead of the full hold; otherwise the
full hold stands: a doubtful turn waits, as before. If he goes on anyway, pipecat's
barge-in stops the reply as it stops any other (the paused suite measures how often).
Not judged while speech of his is still with Whisper (the transcript is not the last).
"""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import Awaitable, Callable

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.utterance_state import UtteranceState

SMART_TURN_WINDOW_S = 8.0  # what smart-turn v3 looks at
# A sentence that stops on one of these has more to come ("Turn on the ...").
UNFINISHED_LAST_WORDS = frozenset(
    "a an the my your his her our their this that these those some any and or but so "
    "because if when while then than to of in on at for with from by about into onto "
    "like as is are was were be been am do does did can could will would should shall "
    "may might must have has had not no very really um uh er erm hmm well also please "
    "i i'm i'd i'll i've you we they he she it it's what's where's".split()
)
_WORD = re.compile(r"[a-z']+")


def is_question(text: str) -> bool:
    """Whisper wrote the words as a whole question that ends where a sentence can."""
    return text.strip().endswith("?") and sounds_finished(text)


def sounds_finished(text: str) -> bool:
    """The words end where a sentence can end (no comma, no dangling article or joiner)."""
    text = text.strip().lower()
    if not text or text.endswith((",", "-", "...", "…")):
        return False
    words = _WORD.findall(text)
    return bool(words) and words[-1] not in UNFINISHED_LAST_WORDS


class TurnCompletion(FrameProcessor):
    """Between the commands and the user aggregator: tells the release gate when a turn is
    evidently complete."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], float],
        on_complete: Callable[[], Awaitable[None]],
        *,
        min_probability: float,
        question_probability: float = 0.0,
        utterance: UtteranceState | None = None,
        sample_rate_hz: int = 16000,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._predict = predict
        self._on_complete = on_complete
        self._min_probability = min_probability
        self._question_probability = question_probability
        self._utterance = utterance
        self._rate = sample_rate_hz
        self._audio: collections.deque[bytes] = collections.deque()
        self._audio_bytes = 0
        self._probability: asyncio.Task | None = None
        self._at_stop: np.ndarray | None = None
        """His audio up to VAD's stop, what smart-turn judges (later, for a question)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self._keep(frame)
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._probability = None  # this stretch's end is not known yet
            self._at_stop = None
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            audio = b"".join(self._audio)
            self._at_stop = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
            self._probability = (
                self._smart_turn(self._at_stop) if self._min_probability > 0 else None
            )
        await self.push_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._judge(frame.text)

    async def cleanup(self):
        if self._probability is not None and not self._probability.done():
            await self.cancel_task(self._probability)
        await super().cleanup()

    def _smart_turn(self, samples: np.ndarray) -> asyncio.Task:
        return self.create_task(
            asyncio.to_thread(self._predict, samples), name=f"{self}::smart_turn"
        )

    def _keep(self, frame: InputAudioRawFrame) -> None:
        if frame.sample_rate != self._rate or frame.num_channels != 1:
            return
        self._audio.append(frame.audio)
        self._audio_bytes += len(frame.audio)
        limit = int(SMART_TURN_WINDOW_S * self._rate) * 2
        while self._audio_bytes - len(self._audio[0]) >= limit:
            self._audio_bytes -= len(self._audio.popleft())

    async def _judge(self, text: str) -> None:
        if self._at_stop is None or (self._utterance is not None and self._utterance.awaiting > 0):
            return
        finished = sounds_finished(text)
        question = self._question_probability > 0 and is_question(text)
        if self._probability is None and question:
            self._probability = self._smart_turn(self._at_stop)
        task = self._probability
        if task is None:
            return
        try:
            probability = await task
        except Exception as e:  # smart-turn failing only costs the shortcut
            logger.warning(f"{self}: smart-turn failed ({type(e).__name__}: {e})")
            self._probability = None
            return
        complete = finished and (
            (self._min_probability > 0 and probability >= self._min_probability)
            or (question and probability >= self._question_probability)
        )
        logger.debug(
            f"{self}: smart-turn {probability:.2f}, words "
            f"{'a question' if question else 'end' if finished else 'go on'}: "
            f"{'complete' if complete else 'full hold'}"
        )
        if complete:
            await self._on_complete()
