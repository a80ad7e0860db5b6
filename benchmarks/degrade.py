"""A degraded copy of the clips, as a proxy for Warren on a phone: slower, noisier, narrower.

Each clip is slowed to 0.75x tempo (sox `tempo`, pitch kept), mixed with white noise at
10 dB SNR and band-limited to the telephone band (300-3400 Hz, through 8 kHz). The noise
is drawn from fixed seeds, and the suite averages `NOISE_SEEDS` realisations of it: one
alone moved the degraded WER by about 6 points. Clear read speech made worse is only a
proxy for slurred speech; the figures are labelled so.
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
BAND_HZ = (300.0, 3400.0)
NOISE_SEEDS = 3


class DegradeError(Exception):
    pass


def _tempo(samples: np.ndarray, factor: float) -> np.ndarray:
    if shutil.which("sox") is None:
        raise DegradeError("the degraded set needs sox (apt-get install sox)")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        sf.write(str(src), samples, SAMPLE_RATE, subtype="PCM_16")
        subprocess.run(
            # -D: no dither, so the same seed gives the same samples on every run.
            ["sox", "-D", str(src), str(dst), "tempo", "-s", str(factor)],
            check=True,
            capture_output=True,
        )
        out, _ = sf.read(str(dst), dtype="int16")
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
