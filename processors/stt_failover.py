"""STT failover: local Whisper first, an OpenAI-protocol transcription API when it fails.

Built on pipecat's own machinery: a `ServiceSwitcher` over [local Whisper,
OpenAI STT] with a `ServiceSwitcherStrategyFailover`, which switches only when
the active service reports itself unusable. Two things are added so that
Warren is never met with silence:

- Local Whisper that fails on a segment reports itself unusable (pipecat's
  Whisper service would only log the error and go on failing) and hands the
  segment it could not transcribe to the strategy, which has the fallback
  transcribe that same segment first: his words are not lost.
- When nothing can transcribe a segment (no fallback configured, or the
  fallback fails too), Nabu asks him to say it again, as the transcript guard
  does for words it cannot trust; the request is not recorded in the history.

The switch lasts `stt.retry_local_after_s` (a passing fault, such as memory
running short, should not keep Warren on the cloud for the whole conversation):
then local Whisper is brought back at the end of the next segment the fallback
takes, and, should it fail again, it hands that segment over as before. Only
segment boundaries matter to a segmented STT, so nothing else is lost at a
switch (audio arriving while it happens is silence after his segment).

The switcher is pipecat's, except that it remembers only the last few thousand
frame ids it has forwarded: `ParallelPipeline` keeps every id to drop
duplicates, which for the 50 audio frames a second passing an STT would grow
for as long as a conversation lasts (duplicates arrive within a few frames).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncGenerator, Callable

from loguru import logger
from pipecat.audio.utils import pcm_to_wav
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    TranscriptionFrame,
    TTSSpeakFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.service_switcher import ServiceSwitcher, ServiceSwitcherStrategyFailover
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.stt import OpenAISTTService

from processors.whisper_stt import NabuWhisperSTTService

STT_FAILED = "Sorry, I couldn't hear you just then. Could you say that again?"
RECENT_FRAME_IDS = 4096


class SegmentNotTranscribed(Exception):
    """An engine failed on this speech segment (16-bit mono PCM at the pipeline's input rate)."""

    def __init__(self, pcm: bytes, cause: str):
        super().__init__(cause)
        self.pcm = pcm


async def ask_to_repeat(processor: FrameProcessor) -> None:
    """Tell Warren his words were not heard (spoken, never recorded in the history)."""
    await processor.push_frame(TTSSpeakFrame(STT_FAILED, append_to_context=False))


class FailoverWhisperSTTService(NabuWhisperSTTService):
    """Local Whisper that, on failure, hands over to the fallback (or asks Warren to repeat)."""

    def __init__(self, *, has_fallback: bool, **kwargs):
        super().__init__(**kwargs)
        self._has_fallback = has_fallback

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        async for frame in super().run_stt(audio):
            if isinstance(frame, ErrorFrame):
                await self._failed(frame.error, audio)
                return
            yield frame

    async def resume(self) -> None:
        """Usable again after a rest, without audio left over from before the failure."""
        self._audio_buffer.clear()
        await self.set_usable(True)

    async def _failed(self, cause: str, audio: bytes) -> None:
        # NabuWhisperSTTService has already logged the failure with its cause.
        if not self._has_fallback:
            logger.info(f"{self}: no STT fallback configured; asking Warren to say it again")
            await ask_to_repeat(self)
            return
        # Unusable first, so the failover strategy sees the verdict; pushed straight upstream
        # (not push_error) so that the switch is logged once, by the strategy.
        await self.set_usable(False)
        error = ErrorFrame(
            error=cause, processor=self, exception=SegmentNotTranscribed(audio, cause)
        )
        await self.push_frame(error, FrameDirection.UPSTREAM)


class NabuOpenAISTTService(OpenAISTTService):
    """pipecat's OpenAI STT (any OpenAI-protocol endpoint), as Nabu's pipeline needs it.

    Its transcripts carry no Whisper evidence for the guard (`result=None`), a
    failure asks Warren to repeat instead of leaving him unanswered, and it can
    take over a segment another engine failed on.
    """

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        async for frame in super().run_stt(audio):
            if isinstance(frame, ErrorFrame):
                logger.warning(
                    f"{self}: STT at {self._client.base_url} failed ({frame.error[:200]}); "
                    "asking Warren to say it again"
                )
                await ask_to_repeat(self)
                continue
            if isinstance(frame, TranscriptionFrame):
                frame.result = None
            yield frame

    async def transcribe_segment(self, pcm: bytes) -> None:
        """Queue a segment (raw 16-bit PCM) for transcription, after any already queued."""
        audio = pcm_to_wav(pcm, self.sample_rate) if self.wants_wav_segments else pcm
        await self._segment_queue.put(audio)


class HandOverFailover(ServiceSwitcherStrategyFailover):
    """pipecat's failover strategy, which also hands the failed segment to the new service."""

    clock: Callable[[], float] = time.monotonic
    failed_at: float | None = None
    """When the first service failed (`clock` time); None while it is active."""

    async def handle_error(self, error: ErrorFrame) -> FrameProcessor | None:
        failed = error.processor or self._active_service
        if failed.is_usable:
            return None
        start = self._services.index(self._active_service)
        for offset in range(1, len(self._services)):
            candidate = self._services[(start + offset) % len(self._services)]
            if candidate.is_usable and await self._set_active_if_available(candidate):
                self.failed_at = self.clock()
                segment = error.exception
                handed = isinstance(segment, SegmentNotTranscribed) and hasattr(
                    candidate, "transcribe_segment"
                )
                logger.warning(
                    f"STT failover: {failed.name} failed ({error.error[:200]}); {candidate.name} "
                    "transcribes while it rests"
                    + (", starting with the segment it failed on" if handed else "")
                )
                if handed:
                    await candidate.transcribe_segment(segment.pcm)
                return candidate
        logger.error(f"STT failover: {failed.name} failed ({error.error[:200]}); none left")
        return None


class _RecentIds:
    """A set that remembers only the last `size` ids added."""

    def __init__(self, size: int = RECENT_FRAME_IDS):
        self._size = size
        self._ids: set[int] = set()
        self._order: deque[int] = deque()

    def __contains__(self, frame_id: object) -> bool:
        return frame_id in self._ids

    def add(self, frame_id: int) -> None:
        if frame_id in self._ids:
            return
        self._ids.add(frame_id)
        self._order.append(frame_id)
        if len(self._order) > self._size:
            self._ids.discard(self._order.popleft())

    def __len__(self) -> int:
        return len(self._ids)


class STTFailoverSwitcher(ServiceSwitcher[HandOverFailover]):
    """ServiceSwitcher over [local, fallback]: back to local after a rest; bounded id tracking."""

    def __init__(
        self,
        services: list[FrameProcessor],
        *,
        retry_local_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(services=services, strategy_type=HandOverFailover)
        self._seen_ids = _RecentIds()
        self._retry_local_after_s = retry_local_after_s
        self.strategy.clock = clock

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        await super().push_frame(frame, direction)
        # A segment's end has passed through the fallback (its words are queued there): the
        # earliest point at which local Whisper can take the next segment whole.
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            await self._maybe_return_to_local()

    async def _maybe_return_to_local(self) -> None:
        strategy, local = self.strategy, self.services[0]
        if strategy.active_service is local or strategy.failed_at is None:
            return
        rested = strategy.clock() - strategy.failed_at
        if rested < self._retry_local_after_s:
            return
        if isinstance(local, FailoverWhisperSTTService):
            await local.resume()
        else:
            await local.set_usable(True)
        if await strategy._set_active_if_available(local):
            strategy.failed_at = None
            logger.info(
                f"STT failover: {rested:.0f}s on the fallback; {local.name} transcribes again"
            )
