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

When his words meet a rule, this stage offers the release gate a shorter hold,
`turn.complete_turn_hold_s` after his speech (SpeechReleaseGate.offer_early_release),
with smart-turn as the judge. The gate asks it only when the reply is ready before the
whole hold ends, so smart-turn never shares the cores with Whisper's decode, and costs
nothing where the reply comes after the hold anyway (most LLM replies on a 2-core CPU).
A doubtful turn waits the whole hold, as before. If he goes on anyway, pipecat's
barge-in stops the reply as it stops any other (the paused suite measures how often).
Not offered while speech of his is still with Whisper (the transcript is not the last).
"""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import Awaitable, Callable
from functools import partial

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
    """Between the commands and the user aggregator: offers the release gate a shorter hold
    when a turn may be evidently complete, with smart-turn to judge it."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], float],
        offer: Callable[[Callable[[], Awaitable[bool]]], None],
        *,
        min_probability: float,
        question_probability: float = 0.0,
        utterance: UtteranceState | None = None,
        sample_rate_hz: int = 16000,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._predict = predict
        self._offer = offer
        self._min_probability = min_probability
        self._question_probability = question_probability
        self._utterance = utterance
        self._rate = sample_rate_hz
        self._audio: collections.deque[bytes] = collections.deque()
        self._audio_bytes = 0
        self._at_stop: np.ndarray | None = None
        """His audio up to VAD's stop: what smart-turn judges, if the gate asks."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self._keep(frame)
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._at_stop = None  # this stretch's end is not known yet
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            audio = b"".join(self._audio)
            self._at_stop = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
        await self.push_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and direction == FrameDirection.DOWNSTREAM:
            self._consider(frame.text)

    def _keep(self, frame: InputAudioRawFrame) -> None:
        if frame.sample_rate != self._rate or frame.num_channels != 1:
            return
        self._audio.append(frame.audio)
        self._audio_bytes += len(frame.audio)
        limit = int(SMART_TURN_WINDOW_S * self._rate) * 2
        while self._audio_bytes - len(self._audio[0]) >= limit:
            self._audio_bytes -= len(self._audio.popleft())

    def _consider(self, text: str) -> None:
        """Offer the shorter hold if his words meet a rule; synchronous, so the interruption
        this very transcript causes downstream cannot cancel it halfway."""
        if self._at_stop is None or (self._utterance is not None and self._utterance.awaiting > 0):
            return
        if not sounds_finished(text):
            return
        question = self._question_probability > 0 and is_question(text)
        thresholds = [p for p in (self._min_probability,) if p > 0]
        if question:
            thresholds.append(self._question_probability)
        if not thresholds:
            return
        kind = "a question" if question else "words that end"
        self._offer(partial(self._judge, self._at_stop, min(thresholds), kind))

    async def _judge(self, samples: np.ndarray, threshold: float, kind: str) -> bool:
        """Asked by the gate once a reply is ready: does his audio sound finished?"""
        probability = await asyncio.to_thread(self._predict, samples)
        complete = probability >= threshold
        logger.debug(
            f"{self}: smart-turn {probability:.2f} on {kind}: "
            f"{'complete' if complete else 'full hold'}"
        )
        return complete
