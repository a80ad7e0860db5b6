"""'Say that again' and 'slower, please': repeat the last answer without asking the LLM.

An old listener often misses a word. Repeating costs nothing: the last
answer is in the conversation context, so Nabu speaks it again (slower when
asked, and stays slower from then on) and neither phrase reaches the LLM or
the history.
"""

from __future__ import annotations

from loguru import logger
from pipecat.frames.frames import Frame, TranscriptionFrame, TTSSpeakFrame, TTSUpdateSettingsFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.consumed_transcript import consumed
from processors.context_text import last_assistant_text
from processors.phrases import Command, PhraseMatcher
from processors.piper_tts import NabuPiperTTSService


class RepeatRequestHandler(FrameProcessor):
    """Answers repeat/slower requests from the context, with no LLM call."""

    def __init__(
        self,
        context: LLMContext,
        matcher: PhraseMatcher,
        *,
        length_scale: float,
        slower_step: float,
        length_scale_max: float,
        nothing_to_repeat: str,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._context = context
        self._matcher = matcher
        self._length_scale = length_scale
        self._step = slower_step
        self._max = length_scale_max
        self._nothing = nothing_to_repeat

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            match = self._matcher.match(frame.text, only=(Command.REPEAT, Command.SLOWER))
            if match is not None:
                await self.push_frame(consumed(frame), direction)
                await self._repeat_last(match.command == Command.SLOWER)
                return
        await self.push_frame(frame, direction)

    async def _repeat_last(self, slower: bool):
        if slower:
            self._length_scale = min(self._length_scale + self._step, self._max)
            await self.push_frame(
                TTSUpdateSettingsFrame(
                    delta=NabuPiperTTSService.Settings(length_scale=self._length_scale)
                )
            )
        text = last_assistant_text(self._context)
        logger.info(
            f"{self}: repeating last answer{' slower' if slower else ''} "
            f"(length_scale {self._length_scale:.2f})"
        )
        await self.push_frame(TTSSpeakFrame(text or self._nothing, append_to_context=False))
