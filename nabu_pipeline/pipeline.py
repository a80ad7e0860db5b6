"""Assembling Nabu's pipeline from its config (docs/ARCHITECTURE.md).

    transport.input() -> echo canceller -> STT -> help calls -> transcript guard -> stop phrases
    -> repeats -> reminders -> memory commands
    -> user aggregator (Silero VAD + turn end) -> history window -> LLM
    -> TTS (speech text shaping as text_transforms) -> speech release gate -> transport.output()
    -> assistant aggregator  (what the output transport sends is the echo canceller's reference)

Heavy models (Whisper, Piper) are loaded once per process by `engines` and
shared; VAD and turn analysers hold per-conversation state, so each session
gets its own (both are small ONNX models).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from loguru import logger
from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
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
from pipecat.turns.user_stop import (
    SpeechTimeoutUserTurnStopStrategy,
    TurnAnalyzerUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from nabu_pipeline import engines
from nabu_pipeline.alerts import AlertService
from nabu_pipeline.config import NabuConfig
from nabu_pipeline.home_actions import HomeActions
from nabu_pipeline.home_assistant import HomeAssistant
from nabu_pipeline.home_tools import register_home_tools
from nabu_pipeline.known_words import KnownWords
from nabu_pipeline.latency import LatencyObserver
from nabu_pipeline.memory_store import MemoryStore, shared_store
from nabu_pipeline.pipeline_worker import NabuPipelineWorker
from nabu_pipeline.prompts import system_prompt
from nabu_pipeline.reminders import ReminderService
from processors.consumed_transcript import WordsStartATurn
from processors.corrections import LearnCorrections
from processors.echo_canceller import (
    EchoCanceller,
    EchoReference,
    SteadierOverEcho,
    reference_what_is_played,
    stamp_capture_times,
)
from processors.echo_words import EchoWords, SpokenWords
from processors.false_interruptions import FalseInterruptionResume, UnplayedSentences
from processors.help_calls import HelpCallHandler, help_templates
from processors.history_window import HistoryWindow
from processors.home_commands import HomeCommands
from processors.inline_vad import InlineSileroVAD
from processors.memory_commands import (
    REMEMBER_TOOL,
    MemoryCommands,
    register_remember_tool,
    remember_tool_schema,
)
from processors.openai_endpoint import api_key
from processors.openai_llm import NabuOpenAILLMService
from processors.phrases import (
    CORRECTIONS,
    LOCAL_QUESTIONS,
    MEMORY_COMMANDS,
    PREFERENCE_FACTS,
    REMINDER_COMMANDS,
    Command,
    PhraseMatcher,
)
from processors.reminder_commands import ReminderCommands
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
from processors.turn_completion import TurnCompletion
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
        api_key=api_key(stt.openai.api_key),
        base_url=stt.openai.base_url,
        settings=NabuOpenAISTTService.Settings(model=stt.openai.model or "whisper-1"),
        ttfs_p99_latency=stt.ttfs_p99_s,
    )


def build_stt(
    config: NabuConfig,
    utterance: UtteranceState | None = None,
    vocabulary: Iterable[str] | None = None,
) -> FrameProcessor:
    """Local Whisper, the OpenAI-protocol STT, or both behind pipecat's failover switcher.
    `vocabulary`: the terms for Whisper's prompt (KnownWords); stt.vocabulary without it."""
    stt = config.stt
    if stt.provider == "openai":
        return _openai_stt(config)
    has_fallback = stt.fallback == "openai"
    loaded = engines.local_or_none(engines.whisper, stt)
    if loaded is None:
        return _openai_stt(config)
    local = FailoverWhisperSTTService(
        has_fallback=has_fallback,
        model=loaded.model,
        model_name=loaded.path,
        beam_size=stt.beam_size,
        language=stt.language,
        vocabulary=stt.vocabulary if vocabulary is None else vocabulary,
        utterance=utterance,
        ttfs_p99_latency=stt.ttfs_p99_s,
    )
    if not has_fallback:
        return local
    return STTFailoverSwitcher(
        [local, _openai_stt(config)], retry_local_after_s=stt.retry_local_after_s
    )


def _openai_tts(config: NabuConfig) -> TTSService:
    from pipecat.services.openai.tts import OpenAITTSService

    tts = config.tts
    return OpenAITTSService(
        api_key=api_key(tts.openai.api_key),
        base_url=tts.openai.base_url,
        settings=OpenAITTSService.Settings(
            model=tts.openai.model or "tts-1", voice=tts.openai_voice
        ),
        text_transforms=[("*", shape_for_speech)],
    )


def build_tts(config: NabuConfig) -> TTSService:
    """Piper (with the OpenAI-protocol fallback per sentence when configured), or OpenAI TTS."""
    tts = config.tts
    if tts.provider == "openai":
        return _openai_tts(config)
    voice = engines.local_or_none(engines.piper, tts)
    if voice is None:
        return _openai_tts(config)
    return PiperWithFallbackTTSService(
        fallback=FallbackSpeech(tts.openai, tts.openai_voice) if tts.fallback == "openai" else None,
        retry_local_after_s=tts.retry_local_after_s,
        voice=voice,
        voice_name=tts.voice,
        length_scale=tts.length_scale,
        volume=tts.volume,
        noise_scale=tts.noise_scale,
        noise_w_scale=tts.noise_w_scale,
        text_transforms=[("*", shape_for_speech)],
    )


def build_matcher(config: NabuConfig) -> PhraseMatcher:
    """Every spoken command of this config, in the one matcher all stages share."""
    conv, guard = config.conversation, config.guard
    return PhraseMatcher(
        {
            Command.STOP: conv.stop_phrases,
            Command.REPEAT: conv.repeat_phrases,
            Command.SLOWER: conv.slower_phrases,
            Command.YES: guard.yes_phrases,
            Command.NO: guard.no_phrases,
            **LOCAL_QUESTIONS,
            **MEMORY_COMMANDS,
            **PREFERENCE_FACTS,
            Command.HELP: help_templates(config.safety),
            **REMINDER_COMMANDS,
            **CORRECTIONS,
        }
    )


def with_preferences(config: NabuConfig, preferences: dict[str, str]) -> NabuConfig:
    """The config with what Warren asked for kept across sessions (memory_store preferences)."""
    tts, locale = {}, {}
    try:
        if "speech_rate" in preferences:
            scale = float(preferences["speech_rate"])
            tts["length_scale"] = min(max(scale, 0.5), config.tts.length_scale_max)
    except ValueError:
        logger.warning("Memory: ignoring an unreadable speech_rate preference")
    if preferences.get("temperature_unit") in ("C", "F"):
        locale["temperature_unit"] = preferences["temperature_unit"]
    if preferences.get("address_as"):
        locale["user_name"] = preferences["address_as"]
    if not tts and not locale:
        return config
    return config.model_copy(
        update={
            "tts": config.tts.model_copy(update=tts),
            "locale": config.locale.model_copy(update=locale),
        }
    )


def build_llm(
    config: NabuConfig,
    matcher: PhraseMatcher | None = None,
    unanswered: set[str] | None = None,
) -> LLMService:
    return NabuOpenAILLMService(
        config=config.llm,
        locale=config.locale,
        system_prompt=config.llm.system_prompt or system_prompt(config.locale),
        matcher=matcher or build_matcher(config),
        unanswered=unanswered,
    )


def build_home(config: NabuConfig) -> HomeActions | None:
    """Warren's home (Home Assistant), when one is configured; None leaves Nabu talking only."""
    if not config.home_assistant.is_configured:
        return None
    home = HomeAssistant(config.home_assistant)
    return HomeActions(home, config.home_assistant, config.locale)


def user_turn_params(
    config: NabuConfig, echo: EchoReference | None = None
) -> LLMUserAggregatorParams:
    """`echo`: with echo cancellation, VAD's start is steadier in a reply's first moments."""
    turn = config.turn
    params = VADParams(
        confidence=turn.vad_confidence,
        start_secs=turn.vad_start_s,
        stop_secs=turn.vad_stop_s,
        min_volume=turn.vad_min_volume,
    )
    if echo is not None:
        vad = SteadierOverEcho(
            reference=echo, start_over_echo_s=turn.vad_start_over_echo_s, params=params
        )
    else:
        vad = InlineSileroVAD(params=params)
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
            start=[VADUserTurnStartStrategy(), WordsStartATurn()],
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
    alerts: AlertService | None = None
    """The alert service this session raises alerts on (the caller's, or its own)."""
    reminders: ReminderService | None = None
    """The reminder store this session sets and lists reminders in."""


def build_session(
    config: NabuConfig,
    transport: BaseTransport,
    *,
    context: LLMContext | None = None,
    observers: list[BaseObserver] | None = None,
    worker_kwargs: dict | None = None,
    echo_reference: EchoReference | None = None,
    memory: MemoryStore | None = None,
    alerts: AlertService | None = None,
    reminders: ReminderService | None = None,
    session_id: str = "",
) -> Session:
    """The whole pipeline for one conversation on `transport`.

    `echo_reference`: given when the transport itself feeds it and stamps its microphone
    frames (a local sound card's threads know best when a chunk is heard or recorded:
    `nabu mic`); otherwise the output's sends and the input's arrivals are used.
    `memory` defaults to the store in the data directory (`server.data_path`), shared by
    every session of this process and by other Nabu processes on the machine.
    `alerts` is the process's alert service (`nabu serve` shares one across sessions so a
    vanished phone never cancels a delivery); without one the session gets its own, which
    its caller closes.
    """
    alerts = alerts if alerts is not None else AlertService(config.safety)
    if reminders is None:
        reminders = ReminderService(config.server.data_path, config.safety, config.locale, alerts)
    context = context or LLMContext()
    if config.memory.enabled:
        memory = memory or shared_store(config.server.data_path)
        config = with_preferences(config, memory.preferences())
    # Shared by STT, release gate and history window: one sentence across Warren's pauses.
    utterance = UtteranceState() if config.turn.pause_tolerance_s > 0 else None
    home = build_home(config)
    # Whisper's prompt: the family's vocabulary, and the names his home and his facts hold.
    known = KnownWords(
        config.stt.vocabulary,
        home.home if home is not None else None,
        memory if config.memory.enabled else None,
        data_dir=config.server.data_path,
    )
    stt = build_stt(config, utterance=utterance, vocabulary=known)
    matcher = build_matcher(config)
    # Questions the LLM failed to answer: the history window keeps them apart from the next.
    unanswered: set[str] = set()
    llm = build_llm(config, matcher, unanswered)
    tts = build_tts(config)
    memory_stage = None
    if memory is not None:
        memory_stage = MemoryCommands(
            memory,
            matcher,
            base_prompt=config.llm.system_prompt or system_prompt(config.locale),
            user_name=config.locale.user_name,
            confirm_timeout_s=config.guard.confirm_timeout_s,
            utterance=utterance,
        )
        if config.memory.llm_proposals and config.llm.is_configured:
            from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

            context.set_tools(ToolsSchema(standard_tools=[remember_tool_schema()]))
            register_remember_tool(llm, memory_stage)
            logger.debug(f"LLM tool: {REMEMBER_TOOL}")
    conv = config.conversation
    if home is not None:
        register_home_tools(llm, context, home)
    echo = echo_reference or EchoReference(config.audio.in_sample_rate_hz)
    aec_on = config.audio.echo_cancellation
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context, user_params=user_turn_params(config, echo if aec_on else None)
    )
    release_gate = SpeechReleaseGate(config.turn.pause_tolerance_s, utterance)
    if aec_on and echo_reference is None:
        reference_what_is_played(transport.output(), echo)
        stamp_capture_times(transport.input(), config.audio.in_sample_rate_hz)
    # What Nabu says aloud, so its echo's words can be taken out of what Whisper heard.
    spoken = SpokenWords() if aec_on else None
    # What Nabu has synthesised and not yet played, to say again when a cut held no words.
    unplayed = UnplayedSentences()
    processors = {
        "input": transport.input(),
        **(
            {"echo_canceller": EchoCanceller(echo, delay_hint_ms=config.audio.echo_delay_hint_ms)}
            if aec_on
            else {}
        ),
        "stt": stt,
        **(
            {"echo_words": EchoWords(spoken, echo, matcher, config.safety)}
            if spoken is not None
            else {}
        ),
        "resume": FalseInterruptionResume(unplayed),
        "help": HelpCallHandler(
            matcher,
            alerts,
            config.safety,
            config.guard,
            config.locale,
            session_id=session_id,
            vocabulary=config.stt.vocabulary,
        ),
        "guard": TranscriptGuard(config.guard, matcher, vocabulary=config.stt.vocabulary),
        "corrections": LearnCorrections(matcher, known),
        "stop_phrases": StopPhraseFilter(
            matcher,
            conv.stop_acknowledgement,
            on_stop=home.cancel_question if home is not None else None,
        ),
        "repeat": RepeatRequestHandler(
            context,
            matcher,
            length_scale=config.tts.length_scale,
            slower_step=config.tts.slower_step,
            length_scale_max=config.tts.length_scale_max,
            nothing_to_repeat=conv.nothing_to_repeat,
        ),
        "reminders": ReminderCommands(matcher, reminders),
        **({"memory": memory_stage} if memory_stage is not None else {}),
        **(
            {
                "home": HomeCommands(
                    home,
                    matcher,
                    on_complete=lambda: release_gate.complete_utterance(
                        config.turn.complete_command_hold_s
                    ),
                    utterance=utterance,
                    pause_hold_s=config.turn.pause_tolerance_s,
                )
            }
            if home
            else {}
        ),
        **(
            {
                "completion": TurnCompletion(
                    engines.smart_turn(),
                    lambda judge: release_gate.offer_early_release(
                        config.turn.complete_turn_hold_s, judge
                    ),
                    min_probability=config.turn.complete_turn_probability,
                    question_probability=config.turn.complete_question_probability,
                    utterance=utterance,
                    sample_rate_hz=config.audio.in_sample_rate_hz,
                )
            }
            if utterance is not None
            and config.turn.strategy == "patient"
            and (
                config.turn.complete_turn_probability > 0
                or config.turn.complete_question_probability > 0
            )
            else {}
        ),
        "user": user_aggregator,
        "history": HistoryWindow(conv.history_turns, utterance, unanswered),
        "llm": llm,
        "tts": tts,
        "release_gate": release_gate,
        "output": transport.output(),
        "assistant": assistant_aggregator,
    }
    latency = LatencyObserver()
    worker = NabuPipelineWorker(
        Pipeline(list(processors.values())),
        params=PipelineParams(
            audio_in_sample_rate=config.audio.in_sample_rate_hz,
            audio_out_sample_rate=config.audio.out_sample_rate_hz,
            enable_metrics=True,
        ),
        observers=[
            latency,
            unplayed,
            *([spoken] if spoken is not None else []),
            *(observers or []),
        ],
        **(worker_kwargs or {}),
    )
    logger.debug(f"Pipeline: {' -> '.join(processors)}")
    return Session(
        worker=worker,
        context=context,
        latency=latency,
        llm=llm,
        parts=processors,
        alerts=alerts,
        reminders=reminders,
    )
