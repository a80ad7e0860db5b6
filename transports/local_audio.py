"""pipecat's local audio transport, steady enough for echo cancellation.

The echo canceller must be told what the speaker played, sample for sample and
before its echo comes back through the microphone. Two changes to pipecat's
`LocalAudioTransport` make that hold on a busy two-core machine:

- `SteadySpeaker`: PortAudio's own thread takes each period of speech (or
  silence) and reports exactly that as played, instead of blocking writes from
  the event loop that left the sound card to run dry whenever the loop was late.
- PortAudio periods of `MIC_BUFFER_S` / `SPEAKER_BUFFER_S` instead of its lowest
  latency (about 9 ms through PulseAudio), at which the microphone overflowed
  several times a minute while Whisper and Piper ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

import pyaudio
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame
from pipecat.processors.frame_processor import FrameProcessor, FrameProcessorSetup
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.local.audio import (
    LocalAudioInputTransport,
    LocalAudioOutputTransport,
    LocalAudioTransport,
)

from processors.echo_canceller import CAPTURED_AT_KEY, CaptureClock

# Told of each period the speaker plays: (pcm, sample_rate_hz, num_channels, heard_at), with
# heard_at on time.monotonic(), the echo canceller's clock.
OnPlayed = Callable[[bytes, int, int, float], None]

MIC_BUFFER_S = 0.1
SPEAKER_BUFFER_S = 0.1


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
        self._capture_clock = CaptureClock(self._sample_rate)

    def _audio_in_callback(self, in_data, frame_count, time_info, status):
        """PortAudio's thread: stamp when the chunk was recorded, before any queue."""
        frame = InputAudioRawFrame(
            audio=in_data,
            sample_rate=self._sample_rate,
            num_channels=self._params.audio_in_channels,
        )
        # Read when PortAudio hands the chunk over, i.e. after it was recorded, while
        # the speaker's chunks are stamped when asked for, before they are heard: so
        # the reference leads its echo by both latencies, as AEC3 needs, whatever they
        # are. (Adding PortAudio's own latency figures put it 160 ms behind.)
        frame.metadata[CAPTURED_AT_KEY] = self._capture_clock.frame_ended(frame_count)
        asyncio.run_coroutine_threadsafe(self.push_audio_frame(frame), self.get_event_loop())
        return (None, pyaudio.paContinue)


class SteadySpeaker(LocalAudioOutputTransport):
    """pipecat's local output, played by PortAudio's clock rather than by blocking writes.

    pipecat writes to the speaker from the event loop; on a busy machine the loop
    comes back late, the sound card runs dry and plays silence nobody was told of,
    and the echo canceller's reference slides against the echo (measured: the
    speaker fell 0.66 s behind the microphone in 23 s while Whisper ran). Here
    PortAudio's own thread asks for each period: it gets what Nabu has queued, or
    silence, and `on_played(pcm, sample_rate_hz, num_channels, heard_at)` hears
    exactly that, silence included, with when it will be heard: the reference is
    the speaker's stream sample for sample, on the sound card's clock. `write_audio_frame` returns
    once at most one period waits ahead, pacing Nabu's speech as a blocking write
    would, so an interruption still cuts it off within `SPEAKER_BUFFER_S`.
    """

    def __init__(self, py_audio, params, on_played: OnPlayed | None):
        super().__init__(py_audio, params)
        self._on_played = on_played
        self._queued = bytearray()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._period_bytes = 0

    async def setup(self, setup: FrameProcessorSetup) -> None:
        await BaseOutputTransport.setup(self, setup)
        self._loop = asyncio.get_running_loop()
        period = int(self.sample_rate * SPEAKER_BUFFER_S)
        self._period_bytes = period * 2 * self._params.audio_out_channels
        self._play_clock = CaptureClock(self.sample_rate)
        self._out_stream = self._py_audio.open(
            format=self._py_audio.get_format_from_width(2),
            channels=self._params.audio_out_channels,
            rate=self.sample_rate,
            frames_per_buffer=period,
            output=True,
            output_device_index=self._params.output_device_index,
            stream_callback=self._play,
        )

    def _play(self, _in_data, frame_count, _time_info, _status):
        """PortAudio's thread: the next period of what Nabu says, or silence."""
        size = frame_count * 2 * self._params.audio_out_channels
        with self._lock:
            chunk = bytes(self._queued[:size])
            del self._queued[:size]
        chunk += bytes(size - len(chunk))
        if self._on_played is not None and self._loop is not None:
            # Played back to back on the sound card's clock: read as one steady stream
            # (a late callback must not push the rest of the reference later, after its
            # echo), and counted from one period before PortAudio asked for it, so the
            # reference reaches the canceller ahead of its echo with room to spare.
            ended = self._play_clock.frame_ended(frame_count)
            heard_at = ended - 2 * frame_count / self.sample_rate
            with contextlib.suppress(RuntimeError):  # the loop has closed: shutting down
                self._loop.call_soon_threadsafe(
                    self._on_played,
                    chunk,
                    self.sample_rate,
                    self._params.audio_out_channels,
                    heard_at,
                )
        return (chunk, pyaudio.paContinue)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        if self._out_stream is None:
            return False
        with self._lock:
            self._queued += frame.audio
        while True:
            with self._lock:
                ahead = len(self._queued)
            if ahead <= self._period_bytes:
                return True
            await asyncio.sleep(SPEAKER_BUFFER_S / 2)

    async def cleanup(self) -> None:
        await BaseOutputTransport.cleanup(self)
        if self._out_stream:
            # Stopping waits for a running callback; closing under one would crash.
            self._out_stream.stop_stream()
            self._out_stream.close()
            self._out_stream = None
        self._executor.shutdown(wait=False)


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
            self._output = SteadySpeaker(self._pyaudio, self._params, self._on_played)
        return self._output
