"""Test material built from the shipped clips: paused speech and things that are not speech.

- paused: real sentences with silences of 0.5-1.2 s inserted at word boundaries (found with
  Whisper base word timestamps), as Warren pauses mid-sentence.
- nospeech: silence, room noise, mains hum, clicks, breathing, music, and speech played
  backwards (unintelligible); none of it may reach the LLM.

Everything is generated with numpy from the clips in benchmarks/clips, so the suites need
no download and are the same on every machine (fixed random seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.clips import SAMPLE_RATE, Clip

PAUSES_S = (0.5, 0.8, 1.0, 1.2)
MIN_WORDS = 4


@dataclass(frozen=True)
class PausedClip:
    clip: Clip
    source: str
    pauses_s: tuple[float, ...]
    pause_after_words: tuple[int, ...]
    """Word counts after which each pause was inserted."""


def word_spans(samples: np.ndarray) -> list[tuple[str, float, float]]:
    """(word, start_s, end_s) from Whisper base word timestamps."""
    from nabu_pipeline import engines
    from nabu_pipeline.config import STTConfig

    model = engines.whisper(STTConfig(model="base")).model
    segments, _ = model.transcribe(
        samples.astype(np.float32) / 32768.0, language="en", beam_size=1, word_timestamps=True
    )
    return [(w.word.strip(), w.start, w.end) for s in segments for w in (s.words or [])]


def insert_silences(samples: np.ndarray, at_s: list[float], pauses: list[float]) -> np.ndarray:
    out, last = [], 0
    for at, pause in zip(at_s, pauses, strict=True):
        cut = int(at * SAMPLE_RATE)
        out += [samples[last:cut], np.zeros(int(pause * SAMPLE_RATE), dtype=np.int16)]
        last = cut
    out.append(samples[last:])
    return np.concatenate(out)


def pause_after_word(samples: np.ndarray, words: int, pause_s: float) -> np.ndarray:
    """`samples` with `pause_s` of silence between its `words`-th word and the next."""
    spans = word_spans(samples)
    gap_mid = (spans[words - 1][2] + spans[words][1]) / 2
    return insert_silences(samples, [gap_mid], [pause_s])


def paused_suite(clips: list[Clip]) -> list[PausedClip]:
    """One or two pauses per sentence, at word boundaries, lengths cycling 0.5-1.2 s."""
    items: list[PausedClip] = []
    n = 0
    for clip in clips:
        words = word_spans(clip.samples)
        if len(words) < MIN_WORDS:
            continue
        # Boundaries between words, never after the first or before the last word.
        if len(words) >= 8:
            picks = [len(words) // 3, (2 * len(words)) // 3]
        else:
            picks = [len(words) // 2]
        at_s, pauses = [], []
        for k in picks:
            gap_mid = (words[k - 1][2] + words[k][1]) / 2
            at_s.append(gap_mid)
            pauses.append(PAUSES_S[n % len(PAUSES_S)])
            n += 1
        samples = insert_silences(clip.samples, at_s, pauses)
        items.append(
            PausedClip(
                clip=clip.variant("paused", samples),
                source=clip.name,
                pauses_s=tuple(pauses),
                pause_after_words=tuple(picks),
            )
        )
    return items


def _pcm(x: np.ndarray, peak_dbfs: float) -> np.ndarray:
    x = x / max(np.max(np.abs(x)), 1e-9) * 10 ** (peak_dbfs / 20)
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


def _seconds(s: float) -> np.ndarray:
    return np.arange(int(s * SAMPLE_RATE)) / SAMPLE_RATE


def nospeech_suite(clips: list[Clip], duration_s: float = 4.0) -> list[Clip]:
    """Sounds that are not words Warren said. Levels are those of a phone on a table."""
    rng = np.random.default_rng(7)
    t = _seconds(duration_s)
    n = len(t)
    white = rng.standard_normal(n)
    brown = np.cumsum(rng.standard_normal(n))
    brown -= np.convolve(brown, np.ones(400) / 400, mode="same")  # no DC drift
    sounds: dict[str, np.ndarray] = {
        "silence": np.zeros(n, dtype=np.int16),
        "room_noise": _pcm(brown + 0.1 * white, -30),
        "fan_noise": _pcm(white, -35),
        "mains_hum": _pcm(
            sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((60, 120, 180), 1)), -20
        ),
    }
    clicks = np.zeros(n)
    for at in rng.uniform(0.2, duration_s - 0.2, 12):
        i = int(at * SAMPLE_RATE)
        clicks[i : i + 40] = rng.standard_normal(40) * np.exp(-np.arange(40) / 8)
    sounds["clicks"] = _pcm(clicks, -6)
    breath = np.zeros(n)
    for start in (0.3, 1.6, 2.9):
        i, m = int(start * SAMPLE_RATE), int(0.7 * SAMPLE_RATE)
        env = np.sin(np.linspace(0, np.pi, m)) ** 2
        band = np.convolve(rng.standard_normal(m), np.hanning(24), mode="same")
        breath[i : i + m] = band * env
    sounds["breathing"] = _pcm(breath, -18)
    chords = [
        (261.6, 329.6, 392.0),
        (220.0, 261.6, 329.6),
        (174.6, 220.0, 261.6),
        (196.0, 246.9, 293.7),
    ]
    music = np.zeros(n)
    seg = n // len(chords)
    for k, chord in enumerate(chords):
        tt = t[k * seg : (k + 1) * seg]
        tone = sum(np.sin(2 * np.pi * f * tt) + 0.3 * np.sin(4 * np.pi * f * tt) for f in chord)
        music[k * seg : (k + 1) * seg] = tone * np.exp(-(tt - tt[0]) * 1.5)
    sounds["music"] = _pcm(music, -12)
    out = [
        Clip(
            path=clips[0].path.with_name(f"{name}.wav"),
            transcript="",
            duration_s=duration_s,
            samples=samples,
            speech_start_s=0.0,
            speech_end_s=duration_s,
        )
        for name, samples in sounds.items()
    ]
    # Real speech played backwards: speech-like sound, no words.
    for clip in clips[:: max(1, len(clips) // 6)][:6]:
        rev = clip.samples[::-1].copy()
        out.append(
            Clip(
                path=clip.path.with_name(f"{clip.name}_reversed.wav"),
                transcript="",
                duration_s=clip.duration_s,
                samples=rev,
                speech_start_s=0.0,
                speech_end_s=clip.duration_s,
            )
        )
    return out
