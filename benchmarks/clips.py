"""Benchmark clips: TSV manifests (file, duration_s, transcript) and where speech really ends."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transports.audio_file import AudioFileError, read_pcm16

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIPS_DIR = REPO_ROOT / "benchmarks" / "clips"
DEFAULT_MANIFEST = CLIPS_DIR / "manifest.tsv"
SAMPLE_RATE = 16000
# Silero runs on 512-sample (32 ms) windows at 16 kHz.
VAD_WINDOW = 512
VAD_THRESHOLD = 0.5


def repo_path(path: Path | str) -> str:
    """A file named relative to the repository, as a report should name it: the same on
    every machine, and no machine's directories in a committed report."""
    return Path(os.path.relpath(Path(path).resolve(), REPO_ROOT)).as_posix()


@dataclass(frozen=True)
class Clip:
    path: Path
    transcript: str
    duration_s: float
    samples: np.ndarray
    speech_start_s: float
    speech_end_s: float
    """End of the last speech in the file, by offline Silero VAD (not the pipeline's guess)."""

    @property
    def name(self) -> str:
        return self.path.stem

    @classmethod
    def measured(cls, path: Path, transcript: str, samples: np.ndarray) -> Clip:
        """A clip whose speech bounds are measured on its samples."""
        start, end = speech_bounds(samples)
        return cls(path, transcript, len(samples) / SAMPLE_RATE, samples, start, end)

    def variant(self, suffix: str, samples: np.ndarray) -> Clip:
        """The same words in other audio (slowed, noisier, with pauses), measured anew."""
        path = self.path.with_name(f"{self.name}_{suffix}.wav")
        return Clip.measured(path, self.transcript, samples)


class ManifestError(Exception):
    pass


def speech_bounds(samples: np.ndarray) -> tuple[float, float]:
    """First and last voiced 32 ms window (Silero, threshold 0.5), in seconds."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer

    vad = SileroVADAnalyzer()
    vad.set_sample_rate(SAMPLE_RATE)
    voiced = []
    for i in range(0, len(samples) - VAD_WINDOW + 1, VAD_WINDOW):
        if vad.voice_confidence(samples[i : i + VAD_WINDOW].tobytes()) >= VAD_THRESHOLD:
            voiced.append(i)
    if not voiced:
        return 0.0, 0.0
    return voiced[0] / SAMPLE_RATE, (voiced[-1] + VAD_WINDOW) / SAMPLE_RATE


def load_manifest(path: Path | None = None) -> list[Clip]:
    """Read a manifest; paths are relative to it. Errors name the file and row."""
    path = Path(path or DEFAULT_MANIFEST)
    if not path.is_file():
        raise ManifestError(f"Manifest not found: {path}")
    clips = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = {"file", "transcript"} - set(reader.fieldnames or [])
        if missing:
            raise ManifestError(f"{path}: missing column(s) {sorted(missing)}")
        for n, row in enumerate(reader, 2):
            audio = path.parent / row["file"]
            try:
                samples = read_pcm16(audio, SAMPLE_RATE)
            except AudioFileError as e:
                raise ManifestError(f"{path}, row {n}: {e}") from None
            clips.append(Clip.measured(audio, row["transcript"], samples))
    if not clips:
        raise ManifestError(f"{path} lists no clips")
    return clips
