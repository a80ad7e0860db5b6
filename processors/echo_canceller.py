"""Server-side echo cancellation: Nabu's own voice must not interrupt Nabu.

A phone on speaker plays Nabu's reply and its microphone hears it again. Any
voice activity interrupts the bot, so without help Nabu would cut itself off
mid-sentence. pipecat has no server-side AEC (its issues #1626/#1771); the
phone's own AEC is the first line, this is the second: WebRTC's AEC3 (the
canceller in Chrome, via `pywebrtc-audio`) subtracts what Nabu just played from
what the microphone sent, before VAD sees it. Warren's own voice stays (partly
attenuated while both talk), so he can still interrupt. Whisper is given the
unprocessed audio (see `RAW_AUDIO_KEY`).

`reference_what_is_played` makes each audio chunk reference at the moment the
output transport sends it; `EchoCanceller` sits right after the input transport.
"""

from __future__ import annotations

import collections
from dataclasses import replace

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_output import BaseOutputTransport

# Where the canceller leaves the unprocessed microphone audio for the STT.
RAW_AUDIO_KEY = "nabu_raw_audio"
# Played audio quieter than about -50 dBFS is not "Nabu speaking".
FAR_ACTIVE_ENERGY = 100.0**2
# Echo counts as present above -20 dB of coupling (mic energy / played energy).
ECHO_COUPLING_MIN = 0.01
MIN_COUPLING_FRAMES = 10
# Nabu's voice keeps arriving this long after it stopped playing: the echo path's own
# delay (a phone on speaker over the network: 0.1-0.4 s) plus the room's reverberation.
ECHO_TAIL_S = 0.6
# The reference never holds more than this: a stalled input must not let it drift.
MAX_REFERENCE_S = 1.0
# A continuous reference this late is a speaker that stalled, not one that played on.
MAX_OWED_S = 0.25
# A continuous reference's waiting level is measured over this much audio (see _trim_slack).
SLACK_WINDOW_S = 2.0


class EchoReference:
    """What Nabu played, resampled to the microphone's rate, consumed in step with it.

    `continuous`: the speaker is fed without pause (silence between replies) and
    says when the sound card took each chunk, as `nabu mic`'s does. Speaker and
    microphone then run on one clock, so the n-th sample played pairs with the
    n-th sample recorded, however the event loop bunches up either. When the
    microphone asks for reference that has not arrived yet it gets silence, and
    as many samples are skipped when they do arrive: otherwise each late arrival
    moves the reference after its own echo for good (measured on a busy machine:
    from +100 ms to +30 ms in five seconds, then Nabu heard itself). Without
    `continuous`, a gap is Nabu being silent, and nothing is owed.
    """

    def __init__(self, sample_rate_hz: int = 16000, *, continuous: bool = False):
        self._rate = sample_rate_hz
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._size = 0
        self._resampler: soxr.ResampleStream | None = None
        self._in_rate = 0
        self._continuous = continuous
        self._started = False
        # Samples the microphone was given silence for, to skip when they arrive.
        self._owed = 0
        self._levels: list[int] = []
        self._levels_span = 0

    def push(self, pcm: bytes, sample_rate_hz: int, num_channels: int = 1) -> None:
        samples = np.frombuffer(pcm, dtype=np.int16)
        if num_channels > 1:
            samples = samples.reshape(-1, num_channels).mean(axis=1).astype(np.int16)
        if sample_rate_hz != self._rate:
            if self._resampler is None or self._in_rate != sample_rate_hz:
                self._resampler = soxr.ResampleStream(sample_rate_hz, self._rate, 1, dtype="int16")
                self._in_rate = sample_rate_hz
            samples = self._resampler.resample_chunk(samples)
        self._started = True
        if self._owed:
            skip = min(self._owed, len(samples))
            samples = samples[skip:]
            self._owed -= skip
        if len(samples):
            self._chunks.append(samples)
            self._size += len(samples)
        while self._size > MAX_REFERENCE_S * self._rate and self._chunks:
            self._size -= len(self._chunks.popleft())

    def pull(self, n: int) -> np.ndarray:
        """The next `n` reference samples (silence where Nabu played nothing)."""
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while filled < n and self._chunks:
            chunk = self._chunks[0]
            take = min(n - filled, len(chunk))
            out[filled : filled + take] = chunk[:take]
            filled += take
            if take == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[take:]
            self._size -= take
        if self._continuous and self._started:
            if filled < n:
                self._owed += n - filled
                if self._owed > MAX_OWED_S * self._rate:
                    # Not late audio but a speaker that stopped (PulseAudio holds the
                    # first period of a stream 1.5-2 s): nothing was played meanwhile.
                    self._owed = 0
            self._trim_slack(n)
        return out

    def _trim_slack(self, pulled: int) -> None:
        """Drop reference that always waits: it would pair with echo recorded before it.

        How much reference is waiting when the microphone asks depends on which of
        the two streams started first, not on the sound: measured, a steady 125 ms,
        which put the reference as late as its echo and AEC3 could not cancel it.
        What always waits (the low tenth of the levels over a few seconds) is
        dropped, so the reference leads its echo by the sound card's own latency.
        """
        self._levels.append(self._size)
        self._levels_span += pulled
        if self._levels_span < SLACK_WINDOW_S * self._rate:
            return
        slack = int(np.percentile(self._levels, 10))
        self._levels.clear()
        self._levels_span = 0
        while slack > 0 and self._chunks:
            chunk = self._chunks[0]
            take = min(slack, len(chunk))
            if take == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[take:]
            self._size -= take
            slack -= take


def reference_what_is_played(output: BaseOutputTransport, reference: EchoReference) -> None:
    """Every chunk `output` sends becomes echo reference at the moment it is sent.

    AEC3 can only remove echo whose reference reaches it first. A processor after
    the output transport sees each chunk only after the transport has paced it
    out and then when its own queue gets its turn: on a busy CPU that came later
    than the chunk's echo in the microphone, the canceller never converged and
    Nabu's voice interrupted Nabu (CI under load). The transport's own write is
    the earliest point that is surely what was played, whatever the transport.
    """
    write = output.write_audio_frame

    async def write_and_reference(frame: OutputAudioRawFrame) -> bool:
        reference.push(frame.audio, frame.sample_rate, frame.num_channels)
        return await write(frame)

    output.write_audio_frame = write_and_reference


class EchoCanceller(FrameProcessor):
    """After the input transport: removes Nabu's own voice from the microphone audio."""

    def __init__(self, reference: EchoReference, *, delay_hint_ms: int = 0, **kwargs):
        super().__init__(**kwargs)
        self._reference = reference
        self._delay_hint_ms = delay_hint_ms
        self._aec = None
        self._rate = 0
        self._warned = False
        # Echo coupling (mic energy / played energy) over the last ~2 s of Nabu speaking.
        self._coupling: collections.deque[float] = collections.deque(maxlen=100)
        # Microphone samples until Nabu's last played audio has surely died away.
        self._tail_samples_left = 0

    def _canceller(self, rate: int):
        if self._aec is None or rate != self._rate:
            from pywebrtc_audio import EchoCanceller as AEC3

            self._aec = AEC3(sample_rate=rate, num_channels=1, stream_delay_ms=self._delay_hint_ms)
            self._rate = rate
        return self._aec

    def _echo_present(self, near: np.ndarray, far: np.ndarray, rate: int) -> bool:
        """Whether Nabu's voice is coming back into the microphone right now.

        AEC3 also suppresses Warren's voice while Nabu talks, even when nothing
        echoes (a headset, or a phone whose own AEC already removed it): a "Stop."
        then never reached VAD in one CI run. So the cancelled audio is used only
        while the microphone measurably carries the played audio: the median ratio
        of mic to played energy over Nabu's last ~2 s of speech (a median, so
        Warren's own words do not count), or at the start of a reply before
        there is a measurement. "While" includes the echo's tail: the end of each
        sentence comes back `ECHO_TAIL_S` after it was played, when the reference
        is already silent (the raw tail once started a turn of its own).
        """
        far_energy = float(np.mean(far.astype(np.float32) ** 2))
        if far_energy >= FAR_ACTIVE_ENERGY:
            self._coupling.append(float(np.mean(near.astype(np.float32) ** 2)) / far_energy)
            self._tail_samples_left = int(ECHO_TAIL_S * rate)
        elif self._tail_samples_left > 0:
            self._tail_samples_left -= len(near)
        else:
            return False
        if len(self._coupling) < MIN_COUPLING_FRAMES:
            return True
        return float(np.median(self._coupling)) > ECHO_COUPLING_MIN

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and frame.num_channels == 1 and frame.audio:
            if frame.sample_rate != self._reference._rate:
                if not self._warned:
                    logger.warning(
                        f"{self}: input at {frame.sample_rate} Hz, reference at "
                        f"{self._reference._rate} Hz; echo cancellation off"
                    )
                    self._warned = True
            else:
                near = np.frombuffer(frame.audio, dtype=np.int16)
                far = self._reference.pull(len(near))
                # ~0.6 ms per 100 ms of audio in C++ with the GIL released: fine inline.
                clean = self._canceller(frame.sample_rate).process(near, far)
                raw = frame.audio
                if self._echo_present(near, far, frame.sample_rate):
                    frame = replace(frame, audio=clean.astype(np.int16).tobytes())
                # Whisper gets the microphone as it was: AEC3 also attenuates Warren's own
                # voice while Nabu talks (a barged-in "Stop." came out as nothing), and the
                # phone's AEC has already removed most echo. VAD, which decides barge-in,
                # hears the cancelled audio, so Nabu's echo alone never starts a turn.
                frame.metadata[RAW_AUDIO_KEY] = raw
        await self.push_frame(frame, direction)
