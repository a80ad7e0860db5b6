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
output transport sends it, `stamp_capture_times` stamps each microphone frame as
the input transport receives it, and `EchoCanceller`, right after the input
transport, pairs the two by wall-clock time (see `EchoReference`).
"""

from __future__ import annotations

import collections
import time
from dataclasses import replace

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport

from processors.inline_vad import InlineSileroVAD

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
# The echo of a reply's first words is back in the microphone within this (the phone's
# buffering and the network's round trip included); coupling is measured only after it.
ECHO_SETTLE_S = 0.4
# How long played audio is kept to be matched with the microphone: more than the longest
# echo path plus the microphone's processing backlog on a busy CPU.
KEEP_REFERENCE_S = 3.0
# A microphone stream that falls further behind the wall clock than this is taken to have
# had a gap (a dropped network), and its clock restarts from now.
MAX_CAPTURE_LAG_S = 0.5
# Where the input transport leaves when each microphone frame ended, on the wall clock.
CAPTURED_AT_KEY = "nabu_captured_at"
# Played audio that starts this long after the last ended begins a new reply.
BURST_GAP_S = 0.3
# A reply's first moments, when AEC3 is still finding this reply's echo (see SteadierOverEcho).
REPLY_ONSET_S = 1.5
# What AEC3 is given in place of exact digital silence (see EchoCanceller._never_silent): two
# independent +-1 LSB (-90 dBFS) noises, one for each side, so they never look like an echo.
_DITHER_FAR, _DITHER_NEAR = (
    np.random.default_rng(seed).choice(np.array([-1, 1], dtype=np.int16), 16000) for seed in (1, 2)
)


class EchoReference:
    """What Nabu played, on the wall clock, resampled to the microphone's rate.

    The microphone and the speaker share one clock: the echo in the audio captured
    at time t is what was played shortly before t. Pairing each microphone frame with
    what was played over the same stretch of wall-clock time keeps that relation
    whatever the CPU is doing. Pairing them by order of processing (the first design)
    did not: on a busy CPU the microphone frames waited in their queue, the reference
    ran ahead of them by that backlog, beyond what AEC3 can find, and Nabu's own voice
    interrupted Nabu.
    """

    def __init__(self, sample_rate_hz: int = 16000, clock=time.monotonic):
        self._rate = sample_rate_hz
        self._clock = clock
        self._chunks: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._end = 0.0
        self._resampler: soxr.ResampleStream | None = None
        self._in_rate = 0
        self.echo_heard_at: float | None = None
        """When (on this clock) the canceller last measured Nabu's voice in the microphone."""
        self.echo_absent = False
        """The canceller measured no echo (a headset, or a phone whose own AEC works)."""
        self.burst_started_at: float | None = None
        """When the reply now playing (or the last one) began to play."""

    @property
    def sample_rate(self) -> int:
        return self._rate

    def now(self) -> float:
        return self._clock()

    def in_reply_onset(self) -> bool:
        """Nabu began a reply less than REPLY_ONSET_S ago, and echo was not measured absent."""
        now = self._clock()
        return (
            not self.echo_absent
            and self.burst_started_at is not None
            and now - self.burst_started_at < REPLY_ONSET_S
            and self._end > now - ECHO_TAIL_S
        )

    def push(
        self, pcm: bytes, sample_rate_hz: int, num_channels: int = 1, at: float | None = None
    ) -> None:
        """`pcm` starts playing `at` (now), or right after what was pushed before it."""
        at = self._clock() if at is None else at
        samples = np.frombuffer(pcm, dtype=np.int16)
        if num_channels > 1:
            samples = samples.reshape(-1, num_channels).mean(axis=1).astype(np.int16)
        if sample_rate_hz != self._rate:
            if self._resampler is None or self._in_rate != sample_rate_hz:
                self._resampler = soxr.ResampleStream(sample_rate_hz, self._rate, 1, dtype="int16")
                self._in_rate = sample_rate_hz
            samples = self._resampler.resample_chunk(samples)
        if not len(samples):
            return
        start = max(at, self._end)  # a transport sending ahead still plays back to back
        if at > self._end + BURST_GAP_S:
            self.burst_started_at = start
        self._chunks.append((start, samples))
        self._end = start + len(samples) / self._rate
        while self._chunks and self._chunks[0][0] < at - KEEP_REFERENCE_S:
            self._chunks.popleft()

    def pull(self, n: int, until: float | None = None) -> np.ndarray:
        """What was played during the `n` samples of time ending `until` (now); silence
        where nothing was."""
        until = self._clock() if until is None else until
        rate = self._rate
        start = until - n / rate
        out = np.zeros(n, dtype=np.int16)
        for t0, samples in self._chunks:
            t1 = t0 + len(samples) / rate
            if t1 <= start:
                continue
            if t0 >= until:
                break
            src = max(0, round((start - t0) * rate))
            dst = max(0, round((t0 - start) * rate))
            take = min(len(samples) - src, n - dst)
            if take > 0:
                out[dst : dst + take] = samples[src : src + take]
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) / rate < start - 1.0:
            self._chunks.popleft()
        return out


class CaptureClock:
    """When each microphone frame ended, as a continuous stream on the wall clock.

    Frames arrive in bursts (network jitter, a late event loop), but the microphone
    captured them evenly: each frame ends one frame after the previous one, unless the
    stream is more than `MAX_CAPTURE_LAG_S` off the wall clock (a gap, or a client
    sending faster than real time), when it starts again from now.
    """

    def __init__(self, sample_rate_hz: int, clock=time.monotonic):
        self._rate = sample_rate_hz
        self._clock = clock
        self._end: float | None = None

    def frame_ended(self, num_samples: int) -> float:
        now = self._clock()
        nominal = None if self._end is None else self._end + num_samples / self._rate
        gap = nominal is None or abs(nominal - now) > MAX_CAPTURE_LAG_S
        self._end = now if gap else nominal
        return self._end


def stamp_capture_times(input_transport: BaseInputTransport, sample_rate_hz: int) -> None:
    """Each microphone frame is stamped with when it was captured, as it arrives, before it
    waits in any queue (see `EchoReference`)."""
    clock = CaptureClock(sample_rate_hz)
    push = input_transport.push_audio_frame

    async def push_stamped(frame: InputAudioRawFrame) -> None:
        if CAPTURED_AT_KEY not in frame.metadata:  # a transport that knows better stamps its own
            channels = max(frame.num_channels, 1)
            frame.metadata[CAPTURED_AT_KEY] = clock.frame_ended(len(frame.audio) // 2 // channels)
        await push(frame)

    input_transport.push_audio_frame = push_stamped


def reference_what_is_played(output: BaseOutputTransport, reference: EchoReference) -> None:
    """Every chunk `output` sends becomes echo reference at the moment it is sent.

    AEC3 can only remove echo whose reference reaches it first. A processor after
    the output transport sees each chunk only after the transport has paced it
    out and then when its own queue gets its turn: on a busy CPU that came later
    than the chunk's echo in the microphone, the canceller never converged and
    Nabu's voice interrupted Nabu (CI under load). The transport's own write is
    the earliest point that is surely what was played, whatever the transport.

    A transport that plays faster than real time (the benchmark's, `playback_speed`)
    is referenced as played that fast: taken at 1x, a reply played in 1.5 s stayed
    "playing" for 6 s, over the next clip, and Nabu treated that clip as spoken over
    its own voice (a second Whisper decode: 0.7 s on every turn of `nabu bench`).
    """
    write = output.write_audio_frame
    speed = getattr(output, "playback_speed", 1.0)

    async def write_and_reference(frame: OutputAudioRawFrame) -> bool:
        reference.push(frame.audio, round(frame.sample_rate * speed), frame.num_channels)
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
        # (samples, mic energy, played energy) of the last ECHO_TAIL_S, and how long Nabu has
        # been playing.
        self._recent: collections.deque[tuple[int, float, float]] = collections.deque()
        self._playing_s = 0.0
        self._dither_at = 0

    def _canceller(self, rate: int):
        if self._aec is None or rate != self._rate:
            from pywebrtc_audio import EchoCanceller as AEC3

            self._aec = AEC3(sample_rate=rate, num_channels=1, stream_delay_ms=self._delay_hint_ms)
            self._rate = rate
        return self._aec

    def _never_silent(self, near: np.ndarray, far: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`near` and `far` with exact digital silence replaced by +-1 LSB of noise.

        Once AEC3 has heard a reply, exact zeros on the far side (nothing playing: most of
        the time) let its filters decay into denormal floats, which x86 computes 10-100x
        slower: 1.9 ms per 20 ms frame against 0.1 ms, a tenth of a core taken from Whisper's
        decode and Piper's first sentence on every turn after the first (issue 18). A
        microphone sending exact zeros does the same (0.35 ms). Noise at -90 dBFS keeps the
        numbers normal and is far below anything AEC3 or VAD take for sound; on a replayed
        conversation AEC3 removed the same echo with it as without (the same dB in the first
        reply and at the second's start, `tests/test_echo_reference.py`). Only AEC3 sees it."""
        n = len(far)
        if n > len(_DITHER_FAR):
            reps = n // len(_DITHER_FAR) + 1
            dither_far, dither_near = np.tile(_DITHER_FAR, reps), np.tile(_DITHER_NEAR, reps)
            at = 0
        else:
            dither_far, dither_near = _DITHER_FAR, _DITHER_NEAR
            at = self._dither_at if self._dither_at + n <= len(_DITHER_FAR) else 0
            self._dither_at = at + n
        if not far.any():
            far = dither_far[at : at + n]
        if not near.any():
            near = dither_near[at : at + n]
        return near, far

    def _echo_present(self, near: np.ndarray, far: np.ndarray, rate: int) -> bool:
        """Whether Nabu's voice is coming back into the microphone right now.

        AEC3 also suppresses Warren's voice while Nabu talks, even when nothing
        echoes (a headset, or a phone whose own AEC already removed it): a "Stop."
        then never reached VAD in one CI run. So the cancelled audio is used only
        while the microphone measurably carries the played audio: the median ratio
        of mic energy to played energy, each summed over the last `ECHO_TAIL_S` (the
        echo arrives that much later at most), over Nabu's last ~2 s of speech (a
        median, so Warren's own words do not count). Until the echo has had time
        to arrive (`ECHO_SETTLE_S` into a reply) nothing is measured and the
        cancelled audio is used: measuring the first frames, before the echo came
        back, once read as "no echo" and let the raw echo of a reply's first words
        start a turn. "While" includes the echo's tail: the end of each sentence
        comes back after it was played, when the reference is already silent.
        """
        n = len(near)
        recent = self._recent
        recent.append(
            (
                n,
                float(np.mean(near.astype(np.float32) ** 2)),
                float(np.mean(far.astype(np.float32) ** 2)),
            )
        )
        span = sum(k for k, _, _ in recent)
        while span - recent[0][0] >= ECHO_TAIL_S * rate:
            span -= recent.popleft()[0]
        if max(f for _, _, f in recent) < FAR_ACTIVE_ENERGY:
            self._playing_s = 0.0
            return False
        self._playing_s += n / rate
        if self._playing_s >= ECHO_SETTLE_S:
            # Energies summed over the window: the echo's delay inside it does not matter.
            near_sum = sum(k * e for k, e, _ in recent)
            far_sum = sum(k * f for k, _, f in recent)
            self._coupling.append(near_sum / far_sum)
        if len(self._coupling) < MIN_COUPLING_FRAMES:
            return True
        if float(np.median(self._coupling)) <= ECHO_COUPLING_MIN:
            self._reference.echo_absent = True
            return False
        self._reference.echo_absent = False
        self._reference.echo_heard_at = self._reference.now()
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and frame.num_channels == 1 and frame.audio:
            if frame.sample_rate != self._reference.sample_rate:
                if not self._warned:
                    logger.warning(
                        f"{self}: input at {frame.sample_rate} Hz, reference at "
                        f"{self._reference.sample_rate} Hz; echo cancellation off"
                    )
                    self._warned = True
            else:
                near = np.frombuffer(frame.audio, dtype=np.int16)
                far = self._reference.pull(len(near), frame.metadata.get(CAPTURED_AT_KEY))
                # ~0.1 ms per 20 ms frame in C++ with the GIL released: fine inline.
                clean = self._canceller(frame.sample_rate).process(*self._never_silent(near, far))
                raw = frame.audio
                if self._echo_present(near, far, frame.sample_rate):
                    frame = replace(frame, audio=clean.astype(np.int16).tobytes())
                # Whisper gets the microphone as it was: AEC3 also attenuates Warren's own
                # voice while Nabu talks (a barged-in "Stop." came out as nothing), and the
                # phone's AEC has already removed most echo. VAD, which decides barge-in,
                # hears the cancelled audio, so Nabu's echo alone never starts a turn.
                frame.metadata[RAW_AUDIO_KEY] = raw
        await self.push_frame(frame, direction)


class SteadierOverEcho(InlineSileroVAD):
    """Silero VAD that wants longer speech to start a segment in a reply's first moments.

    What AEC3 leaves of Nabu's voice comes in short stretches, most in the first second of
    a reply and on a busy CPU, and cut Nabu off there. Only the start is made steadier, only
    for REPLY_ONSET_S of each reply, and not when no echo was measured (a headset, a phone
    whose own echo canceller works). Made steadier for whole replies, it lost a short "Help
    me!" spoken over one: the rest of a reply keeps VAD's quick start.
    """

    def __init__(self, *, reference: EchoReference, start_over_echo_s: float, **kwargs):
        super().__init__(**kwargs)
        self._reference = reference
        self._start_over_echo_s = start_over_echo_s
        self._over_echo = False

    def set_params(self, params):
        super().set_params(params)
        self._over_echo = False

    async def analyze_audio(self, buffer: bytes):
        over_echo = self._reference.in_reply_onset()
        if over_echo != self._over_echo and self.sample_rate:
            self._over_echo = over_echo
            start_s = max(self._params.start_secs, self._start_over_echo_s)
            start_s = start_s if over_echo else self._params.start_secs
            # set_params would also reset the VAD's state mid-speech; only the count changes.
            self._vad_start_frames = round(start_s * self.sample_rate / self._vad_frames)
        return await super().analyze_audio(buffer)
