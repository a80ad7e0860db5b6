"""pipecat's local audio transport, made steady enough for echo cancellation.

Two changes to `LocalAudioTransport`, both so that what the echo canceller is
told was played stays in step, sample for sample, with what the microphone
records (the canceller needs the played sound to reach it before its echo):

- PortAudio periods of `MIC_BUFFER_S` / `SPEAKER_BUFFER_S` instead of
  PortAudio's lowest latency (about 9 ms through PulseAudio). At 9 ms, with
  Whisper and Piper busy on two cores, the speaker ran dry and the microphone
  overflowed several times a minute; each dropout shifted the echo against the
  reference (measured: -16 to +14 ms, i.e. the echo often came first) and Nabu
  interrupted itself. With 50 ms the lag was a steady +56 ms.
- `KeepSpeakerFed`: with a mixer, pipecat's output transport writes silence
  between replies instead of letting the speaker run dry, so the speaker plays
  at its own clock from start to end instead of restarting late at each reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pipecat.audio.mixers.base_audio_mixer import BaseAudioMixer
from pipecat.frames.frames import OutputAudioRawFrame
from pipecat.processors.frame_processor import FrameProcessor, FrameProcessorSetup
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.local.audio import (
    LocalAudioInputTransport,
    LocalAudioOutputTransport,
    LocalAudioTransport,
)

# Told of each chunk the speaker took: (pcm, sample_rate_hz, num_channels).
OnPlayed = Callable[[bytes, int, int], None]

MIC_BUFFER_S = 0.05
SPEAKER_BUFFER_S = 0.05


class KeepSpeakerFed(BaseAudioMixer):
    """Mixes nothing in; having a mixer makes the output write silence between replies."""

    async def start(self, sample_rate: int) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def process_frame(self, frame) -> None:
        pass

    async def mix(self, audio: bytes) -> bytes:
        return audio


class RoomyMicrophone(LocalAudioInputTransport):
    """pipecat's local input, opened with `MIC_BUFFER_S` periods."""

    async def setup(self, setup: FrameProcessorSetup) -> None:
        await BaseInputTransport.setup(self, setup)
        self._in_stream = self._py_audio.open(
            format=self._py_audio.get_format_from_width(2),
            channels=self._params.audio_in_channels,
            rate=self._sample_rate,
            frames_per_buffer=int(self._sample_rate * MIC_BUFFER_S),
            stream_callback=self._audio_in_callback,
            input=True,
            input_device_index=self._params.input_device_index,
        )


class RoomySpeaker(LocalAudioOutputTransport):
    """pipecat's local output, opened with `SPEAKER_BUFFER_S` periods.

    `on_played(pcm, sample_rate_hz, num_channels)` hears each chunk once PortAudio
    has taken it, i.e. once the sound card is about to play it. Not before: the
    first write of a stream waits 1.5-2 s for PulseAudio to start the speaker, and
    a chunk counted as played while it waits would be echo that never came.
    """

    def __init__(self, py_audio, params, on_played: OnPlayed | None):
        super().__init__(py_audio, params)
        self._on_played = on_played

    async def setup(self, setup: FrameProcessorSetup) -> None:
        await BaseOutputTransport.setup(self, setup)
        self._out_stream = self._py_audio.open(
            format=self._py_audio.get_format_from_width(2),
            channels=self._params.audio_out_channels,
            rate=self.sample_rate,
            frames_per_buffer=int(self.sample_rate * SPEAKER_BUFFER_S),
            output=True,
            output_device_index=self._params.output_device_index,
        )

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        written = await super().write_audio_frame(frame)
        if written and self._on_played is not None:
            self._on_played(frame.audio, frame.sample_rate, frame.num_channels)
        return written

    async def cleanup(self) -> None:
        # pipecat closes the stream while its executor may still be inside a blocking
        # write (always, with the speaker kept fed): PortAudio then frees the buffer
        # under the write and the process dies (glibc: "malloc_consolidate(): unaligned
        # fastbin chunk detected"). Let that write finish first.
        await BaseOutputTransport.cleanup(self)
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        if self._out_stream:
            self._out_stream.stop_stream()
            self._out_stream.close()
            self._out_stream = None


class RoomyLocalAudioTransport(LocalAudioTransport):
    """LocalAudioTransport with the roomier streams above."""

    def __init__(self, params, *, on_played: OnPlayed | None = None):
        super().__init__(params)
        self._on_played = on_played

    def input(self) -> FrameProcessor:
        if not self._input:
            self._input = RoomyMicrophone(self._pyaudio, self._params)
        return self._input

    def output(self) -> FrameProcessor:
        if not self._output:
            self._output = RoomySpeaker(self._pyaudio, self._params, self._on_played)
        return self._output
