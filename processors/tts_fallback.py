"""Piper TTS that survives Piper failing: the fallback speaks, or the sentence is skipped.

- With `tts.fallback: openai`, the first sentence Piper cannot say is spoken
  by the OpenAI-protocol speech endpoint (`tts.openai`), and so is everything
  after it, until `tts.retry_local_after_s` has passed: then Piper is tried
  again on the next sentence (a passing fault, such as memory running short,
  should not keep Warren on a cloud voice for the rest of the conversation).
- Without a fallback, or when the fallback fails too, that one sentence is
  skipped (a short pause in its place) and the reply goes on with the next;
  the skipped words are not recorded as said.

Why not pipecat's ServiceSwitcher, as for STT: a TTS fails in the middle of a
reply, and by then the rest of the reply's text is already queued inside the
failed service; switching which service gets *new* frames would drop those
sentences, and two services would play audio concurrently. Falling back per
sentence inside one service keeps the order of the reply, its TTS contexts
and the assistant aggregator's record of what was said.

Each fault is one log line: the stage, the sentence (shortened), the cause.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from loguru import logger
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import Frame, TTSAudioRawFrame
from pipecat.services.openai.tts import VALID_VOICES

from nabu_pipeline.config import OpenAIEndpoint
from processors.openai_endpoint import async_client, describe, endpoint_label
from processors.piper_tts import NabuPiperTTSService

OPENAI_PCM_RATE_HZ = 24000  # response_format=pcm from /v1/audio/speech
SKIPPED_PAUSE_S = 0.15  # what Warren hears where a sentence could not be said


class FallbackSpeech:
    """An OpenAI-protocol /v1/audio/speech endpoint (OpenAI, or any compatible server)."""

    def __init__(self, endpoint: OpenAIEndpoint, voice: str):
        self.endpoint = endpoint
        self.label = endpoint_label(endpoint.base_url)
        self.voice = voice if voice in VALID_VOICES else "alloy"
        self._client = async_client(endpoint.api_key, endpoint.base_url, endpoint.timeout_s)

    async def pcm(self, text: str, speed: float) -> AsyncIterator[bytes]:
        """The sentence as 16-bit mono PCM at 24 kHz, streamed as it arrives."""
        async with self._client.audio.speech.with_streaming_response.create(
            model=self.endpoint.model or "tts-1",
            voice=self.voice,
            input=text,
            response_format="pcm",
            speed=round(min(4.0, max(0.25, speed)), 2),
        ) as response:
            async for chunk in response.iter_bytes(4800):
                if chunk:
                    yield chunk


class PiperWithFallbackTTSService(NabuPiperTTSService):
    """NabuPiperTTSService whose failures fall back per sentence (see the module doc)."""

    def __init__(
        self,
        *,
        fallback: FallbackSpeech | None = None,
        retry_local_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._fallback = fallback
        self._retry_local_after_s = retry_local_after_s
        self._clock = clock
        self._on_fallback = False
        self._fallback_since = 0.0
        self._sentence_skipped = False

    @property
    def on_fallback(self) -> bool:
        return self._on_fallback

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        self._sentence_skipped = False
        if self._on_fallback and self._clock() - self._fallback_since >= self._retry_local_after_s:
            logger.info(
                f"{self}: {self._retry_local_after_s:g}s on the TTS fallback; trying Piper again"
            )
            self._switch(to_fallback=False)
        if not self._on_fallback:
            spoke = False
            try:
                async for frame in self.piper_frames(text, context_id):
                    spoke = True
                    yield frame
                return
            except Exception as e:
                cause = describe(e)
            if spoke:  # the start of the sentence was heard: never say it twice
                logger.warning(
                    f"{self}: Piper failed part-way through [{text[:60]}] ({cause}); "
                    "the rest of that sentence is skipped"
                )
                self._switch(to_fallback=True)
                return
            if self._fallback is None:
                logger.warning(
                    f"{self}: Piper failed on [{text[:60]}] ({cause}); no TTS fallback, "
                    "skipping that sentence"
                )
                async for frame in self._skip(context_id):
                    yield frame
                return
            logger.warning(
                f"{self}: Piper failed on [{text[:60]}] ({cause}); the TTS fallback at "
                f"{self._fallback.label} speaks for the next {self._retry_local_after_s:g}s"
            )
            self._switch(to_fallback=True)
        async for frame in self._speak_with_fallback(text, context_id):
            yield frame

    def _switch(self, *, to_fallback: bool) -> None:
        if to_fallback and self._fallback is None:
            return
        if to_fallback:
            self._fallback_since = self._clock()
        if to_fallback != self._on_fallback:
            self._on_fallback = to_fallback
            # pipecat's stream resampler is bound to one input rate (Piper's 22.05 kHz or 24 kHz).
            self._resampler = create_stream_resampler()

    async def _speak_with_fallback(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        assert self._fallback is not None
        spoke = False
        try:
            async for frame in self._stream_audio_frames_from_iterator(
                self._fallback.pcm(text, speed=self._speed()),
                in_sample_rate=OPENAI_PCM_RATE_HZ,
                context_id=context_id,
            ):
                spoke = True
                await self.stop_ttfb_metrics()
                yield frame
        except Exception as e:
            logger.warning(
                f"{self}: TTS fallback at {self._fallback.label} failed on [{text[:60]}] "
                f"({describe(e, (self._fallback.endpoint.api_key,))}); skipping that sentence"
            )
            if not spoke:
                async for frame in self._skip(context_id):
                    yield frame
        finally:
            await self.stop_ttfb_metrics()

    def _speed(self) -> float:
        """OpenAI's speed from Piper's length scale (1.0 is the voice's own pace)."""
        scale = self._synthesis_config().length_scale
        return 1.0 / scale if scale else 1.0

    async def _skip(self, context_id: str) -> AsyncGenerator[Frame, None]:
        """A short pause instead of the sentence (the reply's audio context goes on normally)."""
        self._sentence_skipped = True
        silence = bytes(int(self.sample_rate * SKIPPED_PAUSE_S) * 2)
        yield TTSAudioRawFrame(silence, self.sample_rate, 1, context_id=context_id)

    async def _push_spoken_text(self, src_frame, text, context_id, append_to_context):
        # A skipped sentence was not said: show it to nobody as said, keep it out of history.
        if self._sentence_skipped:
            self._sentence_skipped = False
            # What pipecat does after queueing a sentence's text, minus the text itself.
            if self._push_text_frames and not self._is_streaming_tokens:
                for frame in self._aggregated_frame_sequencer.complete_spoken_slot():
                    await self.push_frame(frame)
            return
        await super()._push_spoken_text(src_frame, text, context_id, append_to_context)
