"""Stop phrases: "stop", "never mind", "be quiet" end what Nabu is doing.

The phrase must be the whole utterance ("how do I stop the heater" is a
question; `phrases.py` decides), never reaches the LLM or the history,
interrupts speech and any LLM generation in flight, and Nabu says at most a
short acknowledgement.

The phone app's Stop button does the same: it sends the RTVI client message
`{"t": "stop"}` (`sendClientMessage("stop")` in the Pipecat clients), which the
RTVI processor pushes down the pipeline as an `RTVIClientMessageFrame`.
"""

from __future__ import annotations

from collections.abc import Callable

from loguru import logger
from pipecat.frames.frames import Frame, TranscriptionFrame, TTSSpeakFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.processors.frameworks.rtvi.frames import RTVIClientMessageFrame

from processors.consumed_transcript import consumed
from processors.phrases import Command, PhraseMatcher

STOP_MESSAGE = "stop"
"""The RTVI client message type the phone app's Stop button sends."""


class StopPhraseFilter(FrameProcessor):
    """Turns a whole-utterance stop phrase into an interruption."""

    def __init__(
        self,
        matcher: PhraseMatcher,
        acknowledgement: str = "Okay.",
        on_stop: Callable[[], str | None] | None = None,
        **kwargs,
    ):
        """`on_stop`: called on every stop; a sentence it returns is said instead of the
        acknowledgement (the home's open question: "Okay, I will not unlock the front door.")."""
        super().__init__(**kwargs)
        self._matcher = matcher
        self._ack = acknowledgement.strip()
        self._on_stop = on_stop

    def is_stop_phrase(self, text: str) -> bool:
        return self._matcher.is_command(text, Command.STOP)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and self.is_stop_phrase(frame.text):
            logger.info(f"{self}: stop phrase [{frame.text}]: interrupting")
            await self._stop()
            await self.push_frame(consumed(frame), direction)
            await self._acknowledge()
            return
        if isinstance(frame, RTVIClientMessageFrame) and frame.type == STOP_MESSAGE:
            logger.info(f"{self}: Stop button: interrupting")
            await self._stop()
            await self._acknowledge()
            return
        await self.push_frame(frame, direction)

    async def _stop(self) -> None:
        # Stops TTS and output at once and cancels the LLM request in flight.
        await self.broadcast_interruption()

    async def _acknowledge(self) -> None:
        said = self._on_stop() if self._on_stop is not None else None
        if said or self._ack:
            await self.push_frame(TTSSpeakFrame(said or self._ack, append_to_context=False))
