"""The echo canceller's reference is paired with the microphone by wall-clock time.

On a busy CPU microphone frames wait in their queue and arrive at the canceller in
bursts; pairing by order of processing then fed AEC3 a reference far ahead of the
echo and Nabu's own voice interrupted Nabu. These drive the real AEC3 with real
speech, the microphone processed late and in bursts, as CI's busy machine did.
"""

import numpy as np
from pywebrtc_audio import EchoCanceller as AEC3

from processors.echo_canceller import CaptureClock, EchoReference
from transports.audio_file import read_pcm16

from .conftest import CLIPS

RATE = 16000
FRAME = 320  # 20 ms


def test_reference_is_what_was_played_over_the_same_stretch_of_time():
    ref = EchoReference(RATE, clock=lambda: 0.0)
    ramp = np.arange(1600, dtype=np.int16)  # 0.1 s played from t = 10.0
    ref.push(ramp.tobytes(), RATE, at=10.0)
    assert np.array_equal(ref.pull(FRAME, until=10.05), ramp[480:800])
    assert not ref.pull(FRAME, until=9.99).any()  # before it played: silence
    # A transport that sends ahead still plays its chunks back to back.
    ref.push(ramp.tobytes(), RATE, at=10.02)
    assert np.array_equal(ref.pull(FRAME, until=10.12), ramp[:FRAME])


def test_capture_clock_runs_evenly_through_bursts_and_restarts_after_a_gap():
    now = [100.0]
    clock = CaptureClock(RATE, clock=lambda: now[0])
    assert clock.frame_ended(FRAME) == 100.0
    # Five frames arrive together after a 0.1 s stall: still 20 ms apart.
    now[0] = 100.1
    ends = [clock.frame_ended(FRAME) for _ in range(5)]
    assert np.allclose(np.diff([100.0, *ends]), 0.02)
    now[0] = 110.0  # a dropped network: the stream starts again from now
    assert clock.frame_ended(FRAME) == 110.0
    # A client flooding faster than real time cannot be captured in the future.
    ends = [clock.frame_ended(FRAME) for _ in range(100)]
    assert max(ends) <= 110.0 + 0.5 + 0.02


class _InProcessingOrder:
    """The first design, for comparison: reference consumed in step with the microphone
    frames as they are processed, whenever that is."""

    def __init__(self):
        self._fifo = np.zeros(0, dtype=np.int16)

    def push(self, pcm: bytes, _rate: int, at: float) -> None:
        self._fifo = np.concatenate([self._fifo, np.frombuffer(pcm, dtype=np.int16)])[-RATE:]

    def pull(self, n: int, until: float) -> np.ndarray:
        out = np.zeros(n, dtype=np.int16)
        take = min(n, len(self._fifo))
        out[:take], self._fifo = self._fifo[:take], self._fifo[take:]
        return out


def _echo_return_loss_db(backlog_frames: int, reference=None) -> float:
    """Nabu starts speaking after 2 s; the microphone hears it 150 ms later at half level.
    The canceller handles the microphone `backlog_frames` late, in bursts; returns how
    much quieter the echo is after cancellation over the last two seconds (dB)."""
    speech = read_pcm16(CLIPS / "jfk.wav", RATE)[: 6 * RATE]
    far = np.concatenate([np.zeros(2 * RATE, dtype=np.int16), speech])
    delay = int(0.15 * RATE)
    mic = (np.concatenate([np.zeros(delay), far[:-delay]]) * 0.5).astype(np.int16)
    ref = reference or EchoReference(RATE, clock=lambda: 0.0)
    now = [0.0]
    capture = CaptureClock(RATE, clock=lambda: now[0])
    aec = AEC3(sample_rate=RATE, num_channels=1, stream_delay_ms=0)
    frames = len(far) // FRAME
    out = np.zeros(frames * FRAME, dtype=np.int16)
    pending: list[tuple[int, float]] = []
    for k in range(frames):
        now[0] = 50.0 + (k + 1) * FRAME / RATE
        played = far[k * FRAME : (k + 1) * FRAME]
        if played.any():
            ref.push(played.tobytes(), RATE, at=now[0] - FRAME / RATE)
        pending.append((k, capture.frame_ended(FRAME)))  # the frame arrives on time...
        if len(pending) > backlog_frames:  # ...but is processed late, a burst at a time
            for j, until in pending:
                near = mic[j * FRAME : (j + 1) * FRAME]
                out[j * FRAME : (j + 1) * FRAME] = aec.process(near, ref.pull(FRAME, until))
            pending.clear()
    last = slice(len(out) - 2 * RATE, len(out))
    before = np.mean(mic[last].astype(np.float64) ** 2)
    after = np.mean(out[last].astype(np.float64) ** 2) + 1e-9
    return 10 * np.log10(before / after)


def test_echo_is_cancelled_even_when_the_microphone_is_processed_late_in_bursts():
    on_time = _echo_return_loss_db(backlog_frames=0)
    late = _echo_return_loss_db(backlog_frames=60)  # 1.2 s behind, in bursts
    old_late = _echo_return_loss_db(backlog_frames=60, reference=_InProcessingOrder())
    print(
        f"echo return loss: on time {on_time:.1f} dB, 1.2 s late in bursts {late:.1f} dB "
        f"(paired in processing order: {old_late:.1f} dB)"
    )
    assert on_time > 10 and late > 10, (on_time, late)


def test_cancelled_audio_is_used_from_a_replys_first_word_while_its_echo_comes_back():
    """Measuring before the echo had arrived once read as "no echo": the raw echo of a
    reply's first words reached VAD and Nabu interrupted itself. Without echo (a headset)
    the microphone is left as it is, so Warren's own words are not attenuated."""
    from processors.echo_canceller import FAR_ACTIVE_ENERGY, EchoCanceller

    speech = read_pcm16(CLIPS / "jfk.wav", RATE)[: 3 * RATE]
    delay = int(0.15 * RATE)
    echo = (np.concatenate([np.zeros(delay), speech[:-delay]]) * 0.5).astype(np.int16)
    for mic, expected in ((echo, True), (np.zeros_like(speech), False)):
        canceller = EchoCanceller(EchoReference(RATE))
        decisions = [
            canceller._echo_present(mic[i : i + FRAME], speech[i : i + FRAME], RATE)
            for i in range(0, len(speech) - FRAME, FRAME)
        ]
        loud = [
            np.mean(speech[i : i + FRAME].astype(np.float32) ** 2)
            for i in range(0, len(speech) - FRAME, FRAME)
        ]
        played = [i for i, e in enumerate(loud) if e >= FAR_ACTIVE_ENERGY]
        assert len(played) > 50
        if expected:
            assert all(decisions[i] for i in played), decisions
        else:
            assert not any(decisions[int(0.8 * RATE / FRAME) :]), decisions


async def test_a_transport_playing_faster_than_real_time_is_referenced_that_fast():
    """The benchmark plays replies at 4x. Referenced at 1x, a reply stayed "playing"
    four times as long, over the next clip, which Nabu then took for speech over its
    own voice (a second Whisper decode on every turn: the bench's latency regression)."""
    from pipecat.frames.frames import OutputAudioRawFrame

    from processors.echo_canceller import reference_what_is_played
    from transports.wav_file import WavFileTransport, wav_transport_params

    transport = WavFileTransport(wav_transport_params(RATE, 24000), output_speed=4.0)
    ref = EchoReference(RATE, clock=lambda: 0.0)
    reference_what_is_played(transport.output(), ref)
    tone = (8000 * np.sin(np.arange(24000) / 24000 * 2 * np.pi * 220)).astype(np.int16)
    for chunk in np.split(tone, 10):  # one second of audio in 0.1 s chunks
        await transport.output().write_audio_frame(
            OutputAudioRawFrame(audio=chunk.tobytes(), sample_rate=24000, num_channels=1)
        )
    assert ref.pull(FRAME, until=0.2).any()  # played from 0 to 0.25 s
    assert not ref.pull(FRAME, until=0.3).any()  # not to 1 s


def test_silence_reaches_aec3_as_noise_that_removes_the_same_echo():
    """After a reply, exact zeros on the far side (nothing playing) let AEC3's filters decay
    into denormal floats, 20x slower (issue 18); the canceller gives AEC3 -90 dBFS of noise
    in place of digital silence. On a replayed conversation (a reply, his words, a second
    reply, the phone's digital silence before he speaks) it removes as much of the echo as
    with the zeros, window by window."""
    from processors.echo_canceller import EchoCanceller

    rng = np.random.default_rng(3)
    first, second = (
        read_pcm16(CLIPS / "jfk.wav", RATE)[a * RATE : b * RATE] for a, b in ((0, 4), (4, 9))
    )
    his = read_pcm16(CLIPS / "goforward.wav", RATE)
    far = np.concatenate([np.zeros(RATE, np.int16), first, np.zeros(6 * RATE, np.int16), second])
    delay = int(0.15 * RATE)
    mic = np.concatenate([np.zeros(delay), far[:-delay]]) * 0.5
    at = 6 * RATE
    mic[at : at + len(his)] += his[: 4 * RATE] * 0.8
    mic = np.clip(mic + rng.standard_normal(len(mic)) * 30, -32768, 32767).astype(np.int16)
    mic[: RATE // 2] = 0  # a phone that sends digital silence before he speaks

    def cancelled(prepare) -> np.ndarray:
        aec = AEC3(sample_rate=RATE, num_channels=1, stream_delay_ms=0)
        return np.concatenate(
            [
                aec.process(*prepare(mic[i : i + FRAME], far[i : i + FRAME]))
                for i in range(0, len(mic) - FRAME + 1, FRAME)
            ]
        )

    canceller = EchoCanceller(EchoReference(RATE))
    given = []

    def dithered(near, played):
        given.append(canceller._never_silent(near, played))
        return given[-1]

    with_noise = cancelled(dithered)
    with_zeros = cancelled(lambda near, played: (near, played))
    assert not any(not n.any() or not f.any() for n, f in given)  # never exact silence
    second_at = RATE + len(first) + 6 * RATE
    for start, end in (
        (RATE, 2 * RATE),
        (second_at, second_at + RATE // 2),
        (second_at + RATE, second_at + 5 * RATE),
    ):
        part = slice(start, end)
        echo = np.mean(mic[part].astype(np.float64) ** 2)
        removed = [
            10 * np.log10(echo / np.mean(out[part].astype(np.float64) ** 2))
            for out in (with_noise, with_zeros)
        ]
        print(
            f"from {start / RATE:.1f} s: removed {removed[0]:.1f} dB, {removed[1]:.1f} with zeros"
        )
        # As much removed, or so much that what is left is far below anything VAD hears.
        assert removed[0] > min(removed[1] - 1.0, 40.0), (start, removed)
