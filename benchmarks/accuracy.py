"""The accuracy suite: WER (Whisper-style English normalisation) and real-time factor per model.

Decoding uses exactly Nabu's settings (beam size, no conditioning on previous
text), so the figures are what Warren gets, not a model's best case.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass

import jiwer
import numpy as np
from whisper_normalizer.english import EnglishTextNormalizer

from benchmarks.clips import SAMPLE_RATE, Clip
from nabu_pipeline import engines
from nabu_pipeline.config import STTConfig
from processors.whisper_stt import decode, vocabulary_prompt

_normalise = EnglishTextNormalizer()
_DIGIT_GAP = re.compile(r"(?<=\d) (?=\d)")


def normalise(text: str) -> str:
    """Whisper's English normaliser, with digit runs joined.

    It turns the spoken "five five" into "55" but leaves Whisper's "5 5" as two
    words: two errors for a right answer. Joining digits on both sides removes that.
    """
    return _DIGIT_GAP.sub("", _normalise(text))


@dataclass
class ClipResult:
    clip: str
    reference: str
    hypothesis: str
    wer: float
    stt_s: float
    audio_s: float


@dataclass
class ModelResult:
    model: str
    wer: float
    """Corpus WER over all clips (errors / reference words), as a fraction."""
    rtf: float
    """Transcription time / audio time (below 1 is faster than real time)."""
    clips: list[ClipResult]


def transcribe(model, samples: np.ndarray, config: STTConfig, prepare=None) -> str:
    """What Nabu's STT would write for `samples` (int16), by its own decode; `prepare`
    (float audio -> float audio) runs first, inside the timing."""
    audio = samples.astype(np.float32) / 32768.0
    if prepare is not None:
        audio = prepare(audio)
    segments, _, _ = decode(
        model,
        audio,
        language=config.language,
        beam_size=config.beam_size,
        prompt=vocabulary_prompt(config.vocabulary),
    )
    return " ".join(s.text.strip() for s in segments).strip()


def spectral_filter():
    """noisereduce's spectral gating (non-stationary, 80 %), the "plain spectral filter"
    of issue 19; None where it is not installed (`pip install noisereduce`: it brings
    scipy, which Nabu itself does not need)."""
    try:
        import noisereduce
    except ImportError:
        return None

    def prepare(audio: np.ndarray) -> np.ndarray:
        reduced = noisereduce.reduce_noise(
            y=audio, sr=SAMPLE_RATE, stationary=False, prop_decrease=0.8
        )
        return reduced.astype(np.float32)

    return prepare


def evaluate(stt: STTConfig, clips: list[Clip], progress=None, prepare=None) -> ModelResult:
    model = engines.whisper(stt).model
    results = []
    for clip in clips:
        start = time.perf_counter()
        hyp = transcribe(model, clip.samples, stt, prepare)
        elapsed = time.perf_counter() - start
        ref_n, hyp_n = normalise(clip.transcript), normalise(hyp)
        results.append(
            ClipResult(
                clip.name,
                clip.transcript,
                hyp,
                jiwer.wer(ref_n, hyp_n) if ref_n else float(bool(hyp_n)),
                round(elapsed, 3),
                round(len(clip.samples) / SAMPLE_RATE, 3),
            )
        )
        if progress is not None:
            progress.update(1)
    refs = [normalise(c.reference) for c in results]
    hyps = [normalise(c.hypothesis) for c in results]
    corpus_wer = jiwer.wer(refs, hyps)
    rtf = sum(c.stt_s for c in results) / sum(c.audio_s for c in results)
    return ModelResult(stt.model, round(corpus_wer, 4), round(rtf, 4), results)


def mean_over_seeds(runs: list[ModelResult]) -> dict:
    """One model's degraded figures, averaged over noise realisations (one run per seed).

    A single realisation of the noise moved the degraded WER by about 6 points, so one
    seed cannot say whether a change helped; the mean of several can, and the spread
    says how far to trust it.
    """
    wers = [r.wer for r in runs]
    return {
        "wer": round(statistics.fmean(wers), 4),
        "wer_per_seed": wers,
        "wer_spread": round(max(wers) - min(wers), 4),
        "rtf": round(statistics.fmean(r.rtf for r in runs), 4),
    }
