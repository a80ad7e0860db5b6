"""Assembling Nabu's pipeline from its config (DESIGN.md, "The pipeline").

    transport.input() -> echo canceller -> STT -> transcript guard -> stop phrases -> repeats
    -> user aggregator (Silero VAD + turn end) -> history window -> LLM
    -> TTS (speech text shaping as text_transforms) -> speech release gate -> transport.output()
    -> echo reference tap -> assistant aggregator

Heavy models (Whisper, Piper) are loaded once per process by `engines` and
shared; VAD and turn analysers hold per-conversation state, so each session
gets its own (both are small ONNX models).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loguru import logger
from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_start.transcription_user_turn_start_strategy import (
    TranscriptionUserTurnStartStrategy,
)
from pipecat.turns.user_stop import (
    SpeechTimeoutUserTurnStopStrategy,
    TurnAnalyzerUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from nabu_pipeline import engines
from nabu_pipeline.config import NabuConfig
from nabu_pipeline.home_actions import HomeActions
from nabu_pipeline.home_assistant import HomeAssistant
from nabu_pipeline.home_tools import register_home_tools
from nabu_pipeline.latency import LatencyObserver
from nabu_pipeline.prompts import system_prompt
from processors.echo_canceller import EchoCanceller, EchoReference, EchoReferenceTap
from processors.history_window import HistoryWindow
from processors.home_commands import HomeCommands
from processors.openai_llm import NabuOpenAILLMService
from processors.repeat_requests import RepeatRequestHandler
from processors.speech_release_gate import SpeechReleaseGate
from processors.speech_text import shape_for_speech
from processors.stop_phrases import StopPhraseFilter
from processors.stt_failover import (
    FailoverWhisperSTTService,
    NabuOpenAISTTService,
    STTFailoverSwitcher,
)
from processors.transcript_guard import TranscriptGuard
from processors.tts_fallback import FallbackSpeech, PiperWithFallbackTTSService
from processors.utterance_state import UtteranceState


def describe_llm(config: NabuConfig) -> str:
    """One plain line saying which LLM answers (never the key)."""
    llm = config.llm
    if llm.provider == "offline":
        return "LLM: offline (local answers only: time, date, what Nabu can do)"
    if not llm.is_configured:
        return (
            f"LLM: none configured ({llm.base_url} needs OPENAI_API_KEY); Nabu answers the time "
            "and date itself and apologises for the rest. Set OPENAI_API_KEY, or "
            "NABU_LLM_BASE_URL for a local server (Ollama, llama.cpp, vLLM)."
        )
    return f"LLM: {llm.model} at {llm.base_url}"


def _openai_stt(config: NabuConfig) -> STTService:
    stt = config.stt
    return NabuOpenAISTTService(
        api_key=stt.openai.api_key or "not-needed",
        base_url=stt.openai.base_url,
        settings=NabuOpenAISTTService.Settings(model=stt.openai.model or "whisper-1"),
        ttfs_p99_latency=stt.ttfs_p99_s,
    )


def build_stt(config: NabuConfig, utterance: UtteranceState | None = None) -> FrameProcessor:
    """Local Whisper, the OpenAI-protocol STT, or both behind pipecat's failover switcher."""
    stt = config.stt
    if stt.provider == "openai":
        return _openai_stt(config)
    has_fallback = stt.fallback == "openai"
    try:
        loaded = engines.whisper(stt)
    except Exception as e:
        if not has_fallback:
            raise
        logger.warning(
            f"STT: local Whisper {stt.model} could not be loaded ({type(e).__name__}: "
            f"{str(e)[:160]}); the fallback at {stt.openai.base_url} transcribes instead"
        )
        return _openai_stt(config)
    local = FailoverWhisperSTTService(
        has_fallback=has_fallback,
        model=loaded.model,
        model_name=loaded.path,
        beam_size=stt.beam_size,
        language=stt.language,
        vocabulary=stt.vocabulary,
        utterance=utterance,
        ttfs_p99_latency=stt.ttfs_p99_s,
    )
    if not has_fallback:
        return local
    return STTFailoverSwitcher([local, _openai_stt(config)])


def build_tts(config: NabuConfig) -> TTSService:
    """Piper (with the OpenAI-protocol fallback per sentence when configured), or OpenAI TTS."""
    tts = config.tts
    transforms = [("*", shape_for_speech)]
    if tts.provider == "openai":
        from pipecat.services.openai.tts import OpenAITTSService

        return OpenAITTSService(
            api_key=tts.openai.api_key or "not-needed",
            base_url=tts.openai.base_url,
            settings=OpenAITTSService.Settings(
                model=tts.openai.model or "tts-1", voice=tts.openai_voice
            ),
            text_transforms=transforms,
        )
    fallback = FallbackSpeech(tts.openai, tts.openai_voice) if tts.fallback == "openai" else None
    try:
        voice = engines.piper(tts)
    except Exception as e:
        if fallback is None:
            raise
        logger.warning(
            f"TTS: Piper voice {tts.voice} could not be loaded ({type(e).__name__}: "
            f"{str(e)[:160]}); the fallback at {fallback.label} speaks instead"
        )
        return build_tts(
            config.model_copy(update={"tts": tts.model_copy(update={"provider": "openai"})})
        )
    return PiperWithFallbackTTSService(
        fallback=fallback,
        voice=voice,
        voice_name=tts.voice,
        length_scale=tts.length_scale,
        volume=tts.volume,
        text_transforms=transforms,
    )


def build_llm(config: NabuConfig) -> LLMService:
    return NabuOpenAILLMService(
        config=config.llm,
        locale=config.locale,
        system_prompt=config.llm.system_prompt or system_prompt(config.locale),
    )


def build_home(config: NabuConfig) -> HomeActions | None:
    """Warren's home (Home Assistant), when one is configured; None leaves Nabu talking only."""
    if not config.home_assistant.is_configured:
        return None
    home = HomeAssistant(config.home_assistant)
    return HomeActions(home, config.home_assistant, config.locale)


def user_turn_params(config: NabuConfig) -> LLMUserAggregatorParams:
    turn = config.turn
    vad = SileroVADAnalyzer(
        params=VADParams(
            confidence=turn.vad_confidence,
            start_secs=turn.vad_start_s,
            stop_secs=turn.vad_stop_s,
            min_volume=turn.vad_min_volume,
        )
    )
    if turn.strategy == "smart_turn":
        stop = TurnAnalyzerUserTurnStopStrategy(
            turn_analyzer=LocalSmartTurnAnalyzerV3(
                params=SmartTurnParams(stop_secs=turn.smart_turn_max_pause_s)
            )
        )
    elif turn.strategy == "patient":
        # The turn ends as soon as a segment's transcript is in, so the answer is prepared
        # while Warren may still be pausing; the SpeechReleaseGate decides when it is heard.
        stop = SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.0)
    else:
        stop = SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=turn.speech_timeout_s)
    return LLMUserAggregatorParams(
        vad_analyzer=vad,
        user_turn_strategies=UserTurnStrategies(
            start=[VADUserTurnStartStrategy(), TranscriptionUserTurnStartStrategy()],
            stop=[stop],
        ),
        user_turn_stop_timeout=turn.stop_timeout_s,
        # A turn with no transcript (noise, or a stop phrase the filter swallowed)
        # gets no answer: pipecat's default would answer one that interrupted Nabu.
        empty_user_turn=None,
    )


@dataclass
class Session:
    """One conversation's pipeline, its worker and what observes it."""

    worker: PipelineWorker
    context: LLMContext
    latency: LatencyObserver
    llm: LLMService
    parts: dict[str, object] = field(default_factory=dict)


def build_session(
    config: NabuConfig,
    transport: BaseTransport,
    *,
    context: LLMContext | None = None,
    observers: list[BaseObserver] | None = None,
    worker_kwargs: dict | None = None,
) -> Session:
    """The whole pipeline for one conversation on `transport`."""
    context = context or LLMContext()
    # Shared by STT, release gate and history window: one sentence across Warren's pauses.
    utterance = UtteranceState() if config.turn.pause_tolerance_s > 0 else None
    stt = build_stt(config, utterance=utterance)
    llm = build_llm(config)
    tts = build_tts(config)
    conv = config.conversation
    home = build_home(config)
    if home is not None:
        register_home_tools(llm, context, home)
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context, user_params=user_turn_params(config)
    )
    release_gate = SpeechReleaseGate(config.turn.pause_tolerance_s, utterance)
    echo = EchoReference(config.audio.in_sample_rate_hz)
    aec_on = config.audio.echo_cancellation
    processors = {
        "input": transport.input(),
        **(
            {"echo_canceller": EchoCanceller(echo, delay_hint_ms=config.audio.echo_delay_hint_ms)}
            if aec_on
            else {}
        ),
        "stt": stt,
        "guard": TranscriptGuard(
            config.guard,
            vocabulary=config.stt.vocabulary,
            commands=config.conversation.stop_phrases,
        ),
        "stop_phrases": StopPhraseFilter(conv.stop_phrases, conv.stop_acknowledgement),
        "repeat": RepeatRequestHandler(
            context,
            repeat_phrases=conv.repeat_phrases,
            slower_phrases=conv.slower_phrases,
            length_scale=config.tts.length_scale,
            slower_step=config.tts.slower_step,
            length_scale_max=config.tts.length_scale_max,
            nothing_to_repeat=conv.nothing_to_repeat,
        ),
        **(
            {
                "home": HomeCommands(
                    home,
                    on_complete=lambda: release_gate.complete_utterance(
                        config.turn.complete_command_hold_s
                    ),
                )
            }
            if home
            else {}
        ),
        "user": user_aggregator,
        "history": HistoryWindow(conv.history_turns, utterance),
        "llm": llm,
        "tts": tts,
        "release_gate": release_gate,
        "output": transport.output(),
        **({"echo_reference": EchoReferenceTap(echo)} if aec_on else {}),
        "assistant": assistant_aggregator,
    }
    latency = LatencyObserver()
    worker = PipelineWorker(
        Pipeline(list(processors.values())),
        params=PipelineParams(
            audio_in_sample_rate=config.audio.in_sample_rate_hz,
            audio_out_sample_rate=config.audio.out_sample_rate_hz,
            enable_metrics=True,
        ),
        observers=[latency, *(observers or [])],
        **(worker_kwargs or {}),
    )
    logger.debug(f"Pipeline: {' -> '.join(processors)}")
    return Session(worker=worker, context=context, latency=latency, llm=llm, parts=processors)
