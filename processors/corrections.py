"""Corrections teach Whisper his words: "No, I said the porch light."

When Nabu got a word wrong, Warren says it again, usually as "no, I said ...". The
words he corrects to are the words Whisper should expect from him: they join the
prompt of every later decode (nabu_pipeline/known_words.py, after the family's own
list), so "torch light" is not heard a second time. The sentence itself goes on
unchanged: the LLM sees it after Nabu's wrong answer and puts things right.
"""

from __future__ import annotations

from loguru import logger
from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from nabu_pipeline.known_words import KnownWords
from processors.phrases import Command, PhraseMatcher


class LearnCorrections(FrameProcessor):
    """After the guard: a correction's words join Whisper's prompt."""

    def __init__(self, matcher: PhraseMatcher, known: KnownWords, **kwargs):
        super().__init__(**kwargs)
        self._matcher = matcher
        self._known = known

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and direction == FrameDirection.DOWNSTREAM:
            match = self._matcher.match(frame.text, only={Command.CORRECTION})
            words = match.slots.get("words", "") if match is not None else ""
            learned = self._known.learn(words) if words else None
            if learned:
                logger.info(f"{self}: learned {learned!r} from a correction")
        await self.push_frame(frame, direction)
