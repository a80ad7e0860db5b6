"""Degraded copies of the clips: Warren's own channel made worse, one factor at a time.

Nabu's phone app sends 16 kHz wideband audio over a WebSocket, so the suite degrades
wideband audio the ways his room and his speech do (issue 19):

- slow: 0.75x tempo (sox `tempo`, pitch kept), as he speaks when tired;
- talk at 10 and 5 dB SNR: other people talking, or a television: two other speakers from
  the clips, mixed under his voice;
- reverb: a little room reverberation (sox `reverb`);
- his room: all three at once (10 dB), the target row (WER <= 2x clean);
- telephone (stress): the first round's proxy, 0.75x + white noise at 10 dB + the
  300-3400 Hz telephone band; reported, not the target, since his app is wideband.

The noise and the talkers are drawn from fixed seeds and every variant is averaged over
`NOISE_SEEDS` realisations: one alone moved the degraded WER by about 6 points. Clear read
speech made worse is only a proxy for slurred speech; the figures are labelled so.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from benchmarks.clips import SAMPLE_RATE, Clip

TEMPO = 0.75
SNR_DB = 10.0
TALK_SNR_DB = (10.0, 5.0)
# sox reverb: reverberance %, HF damping %, room scale %: a small living room, not a hall.
REVERB = ("40", "50", "40")
BAND_HZ = (300.0, 3400.0)
NOISE_SEEDS = 3


class DegradeError(Exception):
    pass


def _sox(samples: np.ndarray, *effect: str) -> np.ndarray:
    if shutil.which("sox") is None:
        raise DegradeError("the degraded set needs sox (apt-get install sox)")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        sf.write(str(src), samples, SAMPLE_RATE, subtype="PCM_16")
        subprocess.run(
            # -D: no dither, so the same seed gives the same samples on every run.
            ["sox", "-D", str(src), str(dst), *effect],
            check=True,
            capture_output=True,
        )
        out, _ = sf.read(str(dst), dtype="int16")
    return out


def _tempo(samples: np.ndarray, factor: float) -> np.ndarray:
    return _sox(samples, "tempo", "-s", str(factor))


def _reverb(samples: np.ndarray) -> np.ndarray:
    # Headroom first: the reverberated sum must not clip.
    quieter = (samples.astype(np.float64) * 0.7).astype(np.int16)
    return _sox(quieter, "reverb", *REVERB)


def _floats(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float64) / 32768


def _pcm(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


def _at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    power = np.mean(speech**2) or 1e-9
    return noise * np.sqrt(power / 10 ** (snr_db / 10) / (np.mean(noise**2) or 1e-9))


def _talkers(n: int, others: list[Clip], rng: np.random.Generator) -> np.ndarray:
    """Two other speakers talking at once for `n` samples, each from a random point."""
    out = np.zeros(n)
    for k in rng.choice(len(others), size=min(2, len(others)), replace=False):
        voice = _floats(others[k].samples)
        reps = int(np.ceil((n + len(voice)) / max(len(voice), 1)))
        looped = np.tile(voice, reps)
        start = int(rng.integers(0, len(voice)))
        out += looped[start : start + n]
    return out


def _with_talk(x: np.ndarray, others: list[Clip], rng, snr_db: float) -> np.ndarray:
    return x + _at_snr(x, _talkers(len(x), others, rng), snr_db)


def _slow(clip: Clip, others, rng) -> np.ndarray:
    return _tempo(clip.samples, TEMPO)


def _talk(snr_db: float):
    def make(clip: Clip, others, rng) -> np.ndarray:
        return _pcm(_with_talk(_floats(clip.samples), others, rng, snr_db))

    return make


def _reverbed(clip: Clip, others, rng) -> np.ndarray:
    return _reverb(clip.samples)


def _his_room(clip: Clip, others, rng) -> np.ndarray:
    room = _floats(_reverb(_tempo(clip.samples, TEMPO)))
    return _pcm(_with_talk(room, others, rng, TALK_SNR_DB[0]))


def _telephone_stress(clip: Clip, others, rng) -> np.ndarray:
    return degrade(clip, seed=int(rng.integers(0, 2**31))).samples


VARIANTS = {
    "slow 0.75x": _slow,
    "talk 10 dB": _talk(TALK_SNR_DB[0]),
    "talk 5 dB": _talk(TALK_SNR_DB[1]),
    "reverb": _reverbed,
    "his room": _his_room,
    "telephone (stress)": _telephone_stress,
}
"""Each factor alone, then together ("his room", the target), then the old stress row."""
TARGET = "his room"


def variant_sets(clips: list[Clip], seeds: int = NOISE_SEEDS) -> dict[str, list[list[Clip]]]:
    """Per variant, the clips degraded once per seed (each clip its own noise and talkers,
    taken from the other clips: never the same speaker's sentence under itself)."""
    out: dict[str, list[list[Clip]]] = {}
    n = len(clips)
    for v, (name, make) in enumerate(VARIANTS.items()):
        sets = []
        for s in range(seeds):
            one = []
            for i, clip in enumerate(clips):
                rng = np.random.default_rng((v + 1) * 100_003 + s * n + i)
                others = [c for c in clips if c.path != clip.path] or [clip]
                one.append(clip.variant(name.split()[0], make(clip, others, rng)))
            sets.append(one)
        out[name] = sets
    return out


def _telephone(x: np.ndarray) -> np.ndarray:
    narrow = soxr.resample(x, SAMPLE_RATE, 8000)
    spectrum = np.fft.rfft(narrow)
    freqs = np.fft.rfftfreq(len(narrow), 1 / 8000)
    spectrum[(freqs < BAND_HZ[0]) | (freqs > BAND_HZ[1])] = 0
    return soxr.resample(np.fft.irfft(spectrum, len(narrow)), 8000, SAMPLE_RATE)


def degraded_sets(clips: list[Clip], seeds: int = NOISE_SEEDS) -> list[list[Clip]]:
    """The clips degraded once per noise seed; every clip has its own noise in every set.

    Set 0 is the one the suite used before it averaged (seed = the clip's position).
    """
    n = len(clips)
    return [[degrade(c, seed=s * n + i) for i, c in enumerate(clips)] for s in range(seeds)]


def degrade(clip: Clip, seed: int = 0) -> Clip:
    slow = _tempo(clip.samples, TEMPO).astype(np.float64) / 32768
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(len(slow))
    speech_power = np.mean(slow**2) or 1e-9
    noise *= np.sqrt(speech_power / 10 ** (SNR_DB / 10) / np.mean(noise**2))
    phone = _telephone(slow + noise)
    samples = (np.clip(phone, -1, 1) * 32767).astype(np.int16)
    return clip.variant("degraded", samples)
