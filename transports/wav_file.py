"""A transport that plays audio into the pipeline as if spoken, and records what Nabu says.

Used by `nabu talk` and the benchmark. Input is fed in 20 ms frames on a
clock (real time, or `speed` times faster), so VAD, turn end and barge-in see
what they would see from a microphone. Output is paced the same way, as a
phone would play it, so an interruption cuts the reply where a listener
would hear it cut.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame, StartFrame
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from processors.echo_canceller import CAPTURED_AT_KEY

FRAME_S = 0.02


def wav_transport_params(in_rate_hz: int, out_rate_hz: int) -> TransportParams:
    """Audio in and out at the pipeline's rates; no end padding (the output is what Nabu said)."""
    return TransportParams(
        audio_in_enabled=True,
        audio_in_sample_rate=in_rate_hz,
        audio_out_enabled=True,
        audio_out_sample_rate=out_rate_hz,
        audio_out_end_silence_secs=0,
    )


class EchoPath:
    """A phone on speaker: what Nabu says comes back into the microphone, later and quieter.

    The output transport hands each chunk it plays to `played`; the input mixes
    `gain` x that audio into what it feeds, `delay_s` after it was played.
    """

    def __init__(self, gain: float, delay_s: float, sample_rate_hz: int):
        self.gain = gain
        self.delay_s = delay_s
        self._rate = sample_rate_hz
        self._queue: list[tuple[float, np.ndarray]] = []
        self._resampler = None
        self._in_rate = 0

    def played(self, pcm: bytes, sample_rate_hz: int) -> None:
        import soxr

        samples = np.frombuffer(pcm, dtype=np.int16)
        if sample_rate_hz != self._rate:
            if self._resampler is None or self._in_rate != sample_rate_hz:
                self._resampler = soxr.ResampleStream(sample_rate_hz, self._rate, 1, dtype="int16")
                self._in_rate = sample_rate_hz
            samples = self._resampler.resample_chunk(samples)
        self._queue.append((time.monotonic(), samples))

    def mix(self, chunk: np.ndarray, captured_at: float) -> np.ndarray:
        """Add to `chunk` (int16) the echo a microphone capturing it at `captured_at` hears."""
        due = captured_at - self.delay_s
        echo = np.zeros(len(chunk), dtype=np.float32)
        filled = 0
        while filled < len(chunk) and self._queue and self._queue[0][0] <= due:
            at, samples = self._queue[0]
            take = min(len(chunk) - filled, len(samples))
            echo[filled : filled + take] = samples[:take]
            filled += take
            if take == len(samples):
                self._queue.pop(0)
            else:
                self._queue[0] = (at, samples[take:])
        mixed = chunk.astype(np.float32) + self.gain * echo
        return np.clip(mixed, -32768, 32767).astype(np.int16)


class WavFileInputTransport(BaseInputTransport):
    """Feeds PCM into the pipeline on a real-time (or sped-up) clock."""

    def __init__(
        self, params: TransportParams, speed: float, echo: EchoPath | None = None, **kwargs
    ):
        super().__init__(params, **kwargs)
        self._speed = speed
        self._echo = echo
        self.ready = asyncio.Event()
        self.fed_s = 0.0
        """Audio time fed so far (the input's own clock)."""

    async def start(self, frame: StartFrame):
        await super().start(frame)
        await self.set_transport_ready(frame)
        self.ready.set()

    async def feed(self, samples: np.ndarray, *, stop: asyncio.Event | None = None) -> None:
        """Push int16 mono samples at the input sample rate, 20 ms per frame, paced."""
        rate = self.sample_rate
        step = int(rate * FRAME_S)
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(samples), step)):
            if stop is not None and stop.is_set():
                return
            chunk = samples[i : i + step]
            if len(chunk) < step:
                chunk = np.pad(chunk, (0, step - len(chunk)))
            # When a real microphone would have captured this frame: a late event loop
            # delays the push, not the capture (nor what the microphone heard then).
            captured_at = t0 + (n + 1) * FRAME_S / self._speed
            if self._echo is not None:
                chunk = self._echo.mix(chunk, captured_at)
            frame = InputAudioRawFrame(audio=chunk.tobytes(), sample_rate=rate, num_channels=1)
            frame.metadata[CAPTURED_AT_KEY] = captured_at
            await self.push_audio_frame(frame)
            self.fed_s += FRAME_S
            delay = t0 + (n + 1) * FRAME_S / self._speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)

    async def feed_silence(self, seconds: float, *, stop: asyncio.Event | None = None) -> None:
        await self.feed(np.zeros(int(self.sample_rate * seconds), dtype=np.int16), stop=stop)


class WavFileOutputTransport(BaseOutputTransport):
    """Collects the audio Nabu speaks, paced like a speaker playing it."""

    def __init__(
        self, params: TransportParams, speed: float, echo: EchoPath | None = None, **kwargs
    ):
        super().__init__(params, **kwargs)
        self._speed = speed
        self.playback_speed = speed
        """How much faster than real time replies play (the echo reference follows it)."""
        self._echo = echo
        self._next_send = 0.0
        self.write_times: list[float] = []
        """Wall-clock time of every audio write (for when Nabu fell silent)."""
        self.audio = bytearray()
        self.bursts: list[tuple[float, int]] = []
        """(wall-clock time, byte offset) where each burst of speech began (after >0.5 s quiet)."""
        self._last_write = 0.0

    async def start(self, frame: StartFrame):
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        now = time.monotonic()
        if now - self._last_write > 0.5:
            self.bursts.append((time.time(), len(self.audio)))
        self._last_write = now
        self.write_times.append(time.time())
        self.audio.extend(frame.audio)
        if self._echo is not None:
            self._echo.played(frame.audio, frame.sample_rate)
        duration = len(frame.audio) / 2 / max(frame.num_channels, 1) / frame.sample_rate
        interval = duration / self._speed
        delay = self._next_send - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
            self._next_send += interval
        else:
            self._next_send = time.monotonic() + interval
        return True


class WavFileTransport(BaseTransport):
    """Input from arrays of samples, output to a byte buffer."""

    def __init__(
        self,
        params: TransportParams,
        speed: float = 1.0,
        output_speed: float | None = None,
        echo: EchoPath | None = None,
        **kwargs,
    ):
        """`output_speed` (default: `speed`) plays replies faster than real time.

        The benchmark feeds speech in real time (turn-taking depends on it) but
        need not wait for every reply to play at 1x. `echo` mixes what Nabu says
        back into its input, as a phone on speaker would.
        """
        super().__init__(**kwargs)
        output_speed = speed if output_speed is None else output_speed
        if speed <= 0 or output_speed <= 0:
            raise ValueError("speed must be > 0")
        self._params = params
        self._input = WavFileInputTransport(params, speed, echo, name="WavFileInput")
        self._output = WavFileOutputTransport(params, output_speed, echo, name="WavFileOutput")

    def input(self) -> WavFileInputTransport:
        return self._input

    def output(self) -> WavFileOutputTransport:
        return self._output
