"""The floor: what each stage of a turn costs alone, per clip, in the same run as the pipeline.

Voice-to-voice can be no lower than the sum of its parts done one after another with
nothing else on the machine: VAD noticing the end of speech, Whisper decoding the same
audio, the LLM's first token and first sentence, Piper's first audio of that sentence.
Measured here with the same models and settings as the pipeline (Whisper through
`whisper_stt.decode`, the same Piper voice, the same LLM endpoint), one stage at a time,
so the report can show how much the pipeline adds to each (issue 18).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass

import numpy as np
from piper import SynthesisConfig

from benchmarks.clips import SAMPLE_RATE, Clip
from benchmarks.latency import summarise
from nabu_pipeline import engines
from nabu_pipeline.config import NabuConfig
from processors.openai_endpoint import sync_client
from processors.whisper_stt import decode, squeeze_pauses, vocabulary_prompt

# The end of a first sentence in the streamed reply (what the pipeline speaks first).
_SENTENCE_END = re.compile(r"[.!?](\s|$)")
FLOOR_STAGES = ("vad_stop_s", "stt_s", "llm_ttft_s", "first_sentence_s", "tts_first_audio_s")


@dataclass
class StageFloor:
    clip: str
    vad_stop_s: float
    """The silence VAD must hear before it ends the segment (turn.vad_stop_s)."""
    stt_s: float
    """Whisper alone on the clip up to its VAD stop, as the STT gets it."""
    llm_ttft_s: float
    first_sentence_s: float
    """From the first token to the end of the first sentence."""
    tts_first_audio_s: float

    @property
    def total_s(self) -> float:
        return round(sum(getattr(self, s) for s in FLOOR_STAGES), 3)

    def as_dict(self) -> dict:
        return {**asdict(self), "total_s": self.total_s}


def _llm_first_sentence(client, model: str, question: str) -> tuple[float, float, str]:
    """(first token, first token -> end of first sentence, that sentence) of one stream."""
    start = time.perf_counter()
    first = None
    text = ""
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], stream=True
    )
    try:
        for chunk in stream:
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if not delta:
                continue
            now = time.perf_counter()
            first = first if first is not None else now
            text += delta
            end = _SENTENCE_END.search(text)
            if end:
                return first - start, now - first, text[: end.start() + 1]
    finally:
        stream.close()
    now = time.perf_counter()
    return (first or now) - start, now - (first or now), text


def measure_floor(config: NabuConfig, clips: list[Clip], llm_url: str) -> list[StageFloor]:
    """Each stage alone, per clip, one after another on an otherwise idle pipeline."""
    whisper = engines.whisper(config.stt).model
    voice = engines.piper(config.tts)
    client = sync_client(None, llm_url, 30.0)
    prompt = vocabulary_prompt(config.stt.vocabulary)
    tts = config.tts
    speaking = SynthesisConfig(  # as NabuPiperTTSService speaks
        length_scale=tts.length_scale,
        volume=tts.volume,
        noise_scale=tts.noise_scale,
        noise_w_scale=tts.noise_w_scale,
    )
    vad_stop_s = config.turn.vad_stop_s
    floors = []
    for clip in clips:
        heard = clip.samples[: int((clip.speech_end_s + vad_stop_s) * SAMPLE_RATE)]
        samples = squeeze_pauses(heard.astype(np.float32) / 32768.0, SAMPLE_RATE)
        start = time.perf_counter()
        segments, _, _ = decode(
            whisper,
            samples,
            language=config.stt.language,
            beam_size=config.stt.beam_size,
            prompt=prompt,
        )
        stt_s = time.perf_counter() - start
        question = " ".join(s.text.strip() for s in segments) or clip.transcript
        ttft, sentence_s, sentence = _llm_first_sentence(client, config.llm.model, question)
        start = time.perf_counter()
        for _ in voice.synthesize(sentence or "Okay.", syn_config=speaking):
            break
        tts_s = time.perf_counter() - start
        floors.append(
            StageFloor(
                clip.name,
                vad_stop_s,
                round(stt_s, 3),
                round(ttft, 3),
                round(sentence_s, 3),
                round(tts_s, 3),
            )
        )
    return floors


def summary(floors: list[StageFloor], in_pipeline: dict[str, dict]) -> dict:
    """p50 per stage alone and in the pipeline (`in_pipeline`: the latency suite's stages).

    stt_s runs from the end of speech in both (alone: the VAD stop's silence plus the decode);
    whisper_s splits it: the decode alone against VAD's stop -> transcript in the pipeline, so
    a slow STT shows whether VAD noticed late or the decode ran slow."""

    def alone(stage: str) -> list[float]:
        if stage == "whisper_s":
            return [f.stt_s for f in floors]
        values = [getattr(f, stage) for f in floors]
        if stage == "stt_s":
            values = [v + f.vad_stop_s for v, f in zip(values, floors, strict=True)]
        return values

    rows = {}
    for stage in (*FLOOR_STAGES[:2], "whisper_s", *FLOOR_STAGES[2:]):
        floor = summarise(alone(stage))["p50"]
        piped = (in_pipeline.get(stage) or {}).get("p50")
        rows[stage] = {
            "alone_p50": floor,
            "in_pipeline_p50": piped,
            "ratio": round(piped / floor, 2) if piped and floor else None,
        }
    return {
        "stages": rows,
        "total_p50_s": summarise([f.total_s for f in floors])["p50"],
        "clips": [f.as_dict() for f in floors],
    }
