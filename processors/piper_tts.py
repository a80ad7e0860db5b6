"""Piper TTS with a shared voice, a speaking rate and a volume for an old listener.

pipecat's PiperTTSService loads (or downloads) its voice per instance and
synthesises at the voice's own pace. Nabu's subclass takes the process-wide
voice, never downloads, and passes Piper's length scale (speaking rate) and
volume, which "slower, please" can change mid-conversation through a
TTSUpdateSettingsFrame.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame
from pipecat.services.piper.tts import PiperTTSService, PiperTTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.utils.tracing.service_decorators import traced_tts
from pipecat.utils.types import NOT_GIVEN, NotGiven, is_given
from piper import PiperVoice, SynthesisConfig


@dataclass
class NabuPiperSettings(PiperTTSSettings):
    """Piper settings plus speaking rate and loudness.

    Parameters:
        length_scale: Piper's phoneme length scale; >1 speaks slower.
        volume: Sample multiplier; >1 is louder.
    """

    length_scale: float | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    volume: float | NotGiven = field(default_factory=lambda: NOT_GIVEN)


class NabuPiperTTSService(PiperTTSService):
    """In-process Piper (GPL-3.0) on a voice loaded once per process."""

    Settings = NabuPiperSettings
    _settings: NabuPiperSettings

    def __init__(
        self,
        *,
        voice: PiperVoice,
        voice_name: str,
        length_scale: float = 1.0,
        volume: float = 1.0,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        **kwargs,
    ):
        # PiperTTSService.__init__ would load (and maybe download) the voice again;
        # initialise the TTSService base directly and use the shared voice.
        TTSService.__init__(
            self,
            push_start_frame=True,
            push_stop_frames=True,
            settings=NabuPiperSettings(
                model=None,
                voice=voice_name,
                language=None,
                length_scale=length_scale,
                volume=volume,
            ),
            **kwargs,
        )
        self._voice = voice
        self._noise = {"noise_scale": noise_scale, "noise_w_scale": noise_w_scale}

    async def _update_settings(self, delta: NabuPiperSettings) -> dict[str, Any]:
        changed = await TTSService._update_settings(self, delta)
        unhandled = {k: v for k, v in changed.items() if k not in ("length_scale", "volume")}
        if unhandled:
            self._warn_unhandled_updated_settings(unhandled)
        return changed

    def _synthesis_config(self) -> SynthesisConfig:
        s = self._settings
        return SynthesisConfig(
            length_scale=s.length_scale if is_given(s.length_scale) else None,
            volume=s.volume if is_given(s.volume) else 1.0,
            **self._noise,
        )

    async def piper_frames(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """One sentence spoken by Piper; a failure is raised to the caller."""
        chunks = iter(self._voice.synthesize(text, syn_config=self._synthesis_config()))

        def next_chunk():
            return next(chunks, None)

        async def audio() -> AsyncIterator[bytes]:
            # Synthesis is CPU-bound: each sentence chunk is produced off the event loop.
            while (chunk := await asyncio.to_thread(next_chunk)) is not None:
                yield chunk.audio_int16_bytes

        await self.start_tts_usage_metrics(text)
        try:
            async for frame in self._stream_audio_frames_from_iterator(
                audio(), in_sample_rate=self._voice.config.sample_rate, context_id=context_id
            ):
                await self.stop_ttfb_metrics()
                yield frame
        finally:
            await self.stop_ttfb_metrics()

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        try:
            async for frame in self.piper_frames(text, context_id):
                yield frame
        except Exception as e:
            logger.error(f"{self}: Piper failed on [{text[:60]}]: {type(e).__name__}: {e}")
            yield ErrorFrame(error=f"Piper failed: {e}")
