"""The three designs the latency benchmark compares, on the same clips and models.

- nabu: Nabu's streaming pipeline, exactly as `nabu talk` and `nabu serve` build it.
- pipecat_default: a stock pipecat 1.14 pipeline with the same models (WhisperSTTService,
  default VAD and smart-turn, OpenAILLMService, PiperTTSService), nothing tuned.
- sequential: the predecessor (docs/RESULTS.md): whole utterance -> Whisper -> whole transcript ->
  non-streaming LLM -> whole reply -> TTS of the whole reply -> send, run with Nabu's own
  components one after another.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transports.base_transport import BaseTransport

from nabu_pipeline import engines
from nabu_pipeline.config import NabuConfig
from nabu_pipeline.latency import LatencyObserver
from nabu_pipeline.models import choose_device, piper_voice_dir, whisper_model_path
from nabu_pipeline.pipeline import Session, build_session
from nabu_pipeline.prompts import system_prompt
from processors.openai_endpoint import api_key, sync_client
from processors.speech_text import shape_text

# How the sequential design knows the utterance is over: VAD stop (0.2 s) plus a 0.6 s
# silence timeout (pipecat's SpeechTimeout default), i.e. 0.8 s after the end of speech.
SEQUENTIAL_ENDPOINT_S = 0.8

WORKER_KWARGS = {"enable_rtvi": False, "idle_timeout_secs": None}


def build_nabu(config: NabuConfig, transport: BaseTransport) -> Session:
    return build_session(config, transport, worker_kwargs=WORKER_KWARGS)


def build_pipecat_default(config: NabuConfig, transport: BaseTransport) -> Session:
    """pipecat's own services and defaults with Nabu's models and prompt."""
    device = choose_device(config.stt.device, config.stt.compute_type)
    stt = WhisperSTTService(
        settings=WhisperSTTService.Settings(model=whisper_model_path(config.stt.model)),
        device=device.device,
        compute_type=device.compute_type,
    )
    llm = OpenAILLMService(
        api_key=api_key(config.llm.api_key),
        base_url=config.llm.base_url,
        settings=OpenAILLMService.Settings(
            model=config.llm.model, system_instruction=system_prompt(config.locale)
        ),
    )
    tts = PiperTTSService(
        settings=PiperTTSService.Settings(voice=config.tts.voice),
        download_dir=piper_voice_dir(config.tts.voice, config.tts.voice_dir),
    )
    context = LLMContext()
    user, assistant = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    latency = LatencyObserver()
    worker = PipelineWorker(
        Pipeline([transport.input(), stt, user, llm, tts, transport.output(), assistant]),
        params=PipelineParams(
            audio_in_sample_rate=config.audio.in_sample_rate_hz,
            audio_out_sample_rate=config.audio.out_sample_rate_hz,
            enable_metrics=True,
        ),
        observers=[latency],
        **WORKER_KWARGS,
    )
    return Session(worker=worker, context=context, latency=latency, llm=llm)


@dataclass
class SequentialTurn:
    transcript: str
    reply: str
    endpoint_s: float
    stt_s: float
    llm_s: float
    tts_s: float

    @property
    def voice_to_voice_s(self) -> float:
        return self.endpoint_s + self.stt_s + self.llm_s + self.tts_s


class SequentialDesign:
    """The predecessor's order of work, with Nabu's models, one step after another."""

    def __init__(self, config: NabuConfig):
        self._config = config
        self._whisper = engines.whisper(config.stt).model
        self._voice = engines.piper(config.tts)
        self._client = sync_client(config.llm.api_key, config.llm.base_url, config.llm.timeout_s)
        self._messages: list[dict] = [{"role": "system", "content": system_prompt(config.locale)}]

    def turn(self, samples: np.ndarray) -> SequentialTurn:
        audio = samples.astype(np.float32) / 32768.0
        t = time.perf_counter()
        segments, _ = self._whisper.transcribe(
            audio, beam_size=self._config.stt.beam_size, language=self._config.stt.language
        )
        transcript = " ".join(s.text.strip() for s in segments).strip()
        stt_s = time.perf_counter() - t
        self._messages.append({"role": "user", "content": transcript})
        t = time.perf_counter()
        completion = self._client.chat.completions.create(
            model=self._config.llm.model,
            messages=self._messages,
            temperature=self._config.llm.temperature,
            max_tokens=self._config.llm.max_tokens,
        )
        reply = completion.choices[0].message.content or ""
        llm_s = time.perf_counter() - t
        self._messages.append({"role": "assistant", "content": reply})
        t = time.perf_counter()
        for _ in self._voice.synthesize(shape_text(reply)):
            pass
        tts_s = time.perf_counter() - t
        return SequentialTurn(transcript, reply, SEQUENTIAL_ENDPOINT_S, stt_s, llm_s, tts_s)
