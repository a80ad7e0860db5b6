"""Reading any audio file into the pipeline's 16 kHz mono PCM, with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


class AudioFileError(Exception):
    """The file is missing or is not audio; the message says which."""


def read_pcm16(path: str | Path, sample_rate_hz: int = 16000) -> np.ndarray:
    """Any sample rate or channel count in; mono int16 at `sample_rate_hz` out."""
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"Input file not found: {path}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise AudioFileError(f"{path} is not an audio file soundfile can read ({e})") from None
    if data.size == 0:
        raise AudioFileError(f"{path} holds no audio samples")
    mono = data.mean(axis=1)
    if rate != sample_rate_hz:
        mono = soxr.resample(mono, rate, sample_rate_hz, quality="HQ")
    return (np.clip(mono, -1.0, 1.0) * 32767).astype(np.int16)


def write_pcm16(path: str | Path, pcm: bytes, sample_rate_hz: int) -> None:
    samples = np.frombuffer(pcm, dtype=np.int16)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, sample_rate_hz, subtype="PCM_16")
