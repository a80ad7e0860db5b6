"""Per-stage latency of each turn, seen from outside the pipeline (a pipecat observer).

Stages, all in seconds, for one user turn:
- turn_end_s: end of speech -> user turn closed
- vad_stop_s: end of speech -> VAD's stop (its stop_secs of silence, and its lag behind them)
- stt_s: end of speech -> last final transcript of the turn
- whisper_s: VAD's stop -> that transcript (the decode, and any wait for the cores)
- llm_ttft_s: LLM request started -> first token
- first_sentence_s: first token -> first sentence handed to TTS
- tts_first_audio_s: sentence handed to TTS -> first audio out of TTS
- voice_to_voice_s: end of speech -> first reply audio leaving the output transport

"End of speech" is when VAD stopped minus its stop_secs (the silence it waited
for), unless the caller knows better (the benchmark measures it on the clip).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport

STAGES = (
    "turn_end_s",
    "vad_stop_s",
    "stt_s",
    "whisper_s",
    "llm_ttft_s",
    "first_sentence_s",
    "tts_first_audio_s",
    "voice_to_voice_s",
)


@dataclass
class TurnRecord:
    """One user turn and Nabu's answer to it."""

    transcript: str = ""
    reply: str = ""
    speech_end: float | None = None
    vad_stop: float | None = None
    turn_end: float | None = None
    transcript_at: float | None = None
    llm_request: float | None = None
    first_token: float | None = None
    llm_end: float | None = None
    first_sentence: float | None = None
    first_audio: float | None = None
    bot_started: float | None = None
    bot_stopped: float | None = None

    def stages(self) -> dict[str, float | None]:
        def d(a, b):
            return round(b - a, 3) if a is not None and b is not None else None

        return {
            "turn_end_s": d(self.speech_end, self.turn_end),
            "vad_stop_s": d(self.speech_end, self.vad_stop),
            "stt_s": d(self.speech_end, self.transcript_at),
            "whisper_s": d(self.vad_stop, self.transcript_at),
            "llm_ttft_s": d(self.llm_request, self.first_token),
            "first_sentence_s": d(self.first_token, self.first_sentence),
            "tts_first_audio_s": d(self.first_sentence, self.first_audio),
            "voice_to_voice_s": d(self.speech_end, self.bot_started),
        }

    def as_dict(self) -> dict:
        streamed = None
        if self.llm_request is not None and self.llm_end is not None:
            streamed = round(self.llm_end - self.llm_request, 3)
        return {
            "transcript": self.transcript,
            "reply": self.reply,
            **self.stages(),
            "llm_total_s": streamed,
        }


@dataclass
class ActivityState:
    """What the pipeline is doing right now (for drivers that wait for a reply to finish)."""

    bot_speaking: bool = False
    llm_running: bool = False
    tts_running: bool = False
    user_turn_open: bool = False
    vad_speaking: bool = False
    bot_stops: int = 0
    last_activity: float = field(default_factory=time.monotonic)


class LatencyObserver(BaseObserver):
    """Records TurnRecords and the activity state, and logs one line per turn."""

    # What on_push_frame reads: `NabuPipelineWorker` wakes it for no other frame (the
    # microphone's fifty a second among them).
    pushed_frame_types = (
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
        UserStartedSpeakingFrame,
        TranscriptionFrame,
        UserStoppedSpeakingFrame,
        LLMFullResponseStartFrame,
        LLMFullResponseEndFrame,
        LLMTextFrame,
        TTSStartedFrame,
        TTSStoppedFrame,
        TTSAudioRawFrame,
        TTSTextFrame,
        BotStartedSpeakingFrame,
        BotStoppedSpeakingFrame,
    )

    def __init__(self, **kwargs):
        # Each moment is the frame's first push (its source made it): pipecat then skips
        # this observer for the ~13 further pushes of every 20 ms audio frame.
        super().__init__(observe_every_push=False, **kwargs)
        self.turns: list[TurnRecord] = []
        self.state = ActivityState()
        self._seen: set[int] = set()
        self._pending_speech_end: float | None = None
        self._pending_vad_stop: float | None = None
        self._current: TurnRecord | None = None
        self._reply_turn: TurnRecord | None = None

    def _turn(self) -> TurnRecord:
        if self._current is None:
            self._current = TurnRecord()
            self.turns.append(self._current)
        return self._current

    async def on_push_frame(self, data: FramePushed):
        frame = data.frame
        # Broadcast frames travel as two copies; count the downstream one only.
        if frame.id in self._seen or data.direction != FrameDirection.DOWNSTREAM:
            return
        # Bot-speaking frames are counted where the output transport emits them.
        if isinstance(frame, (BotStartedSpeakingFrame, BotStoppedSpeakingFrame)) and not isinstance(
            data.source, BaseOutputTransport
        ):
            return
        now = time.time()
        handled = True
        state = self.state
        if isinstance(frame, VADUserStartedSpeakingFrame):
            state.vad_speaking = True
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            state.vad_speaking = False
            self._pending_speech_end = now - frame.stop_secs
            self._pending_vad_stop = now
            if self._current is not None:
                self._current.speech_end = self._pending_speech_end
                self._current.vad_stop = now
        elif isinstance(frame, UserStartedSpeakingFrame):
            state.user_turn_open = True
            self._current = None
            self._turn()
        elif isinstance(frame, TranscriptionFrame):
            turn = self._turn()
            turn.transcript = f"{turn.transcript} {frame.text}".strip()
            turn.transcript_at = now
            if turn.speech_end is None:
                turn.speech_end = self._pending_speech_end
                turn.vad_stop = self._pending_vad_stop
        elif isinstance(frame, UserStoppedSpeakingFrame):
            state.user_turn_open = False
            turn = self._turn()
            turn.turn_end = now
            if turn.speech_end is None:
                turn.speech_end = self._pending_speech_end
                turn.vad_stop = self._pending_vad_stop
            self._reply_turn = turn
            self._current = None
        elif isinstance(frame, LLMFullResponseStartFrame):
            state.llm_running = True
            if self._reply_turn is not None and self._reply_turn.llm_request is None:
                self._reply_turn.llm_request = now
        elif isinstance(frame, LLMFullResponseEndFrame):
            state.llm_running = False
            if self._reply_turn is not None and self._reply_turn.llm_end is None:
                self._reply_turn.llm_end = now
        elif isinstance(frame, LLMTextFrame):
            turn = self._reply_turn
            if turn is not None:
                if turn.first_token is None:
                    turn.first_token = now
                turn.reply += frame.text
        elif isinstance(frame, TTSStartedFrame):
            state.tts_running = True
            turn = self._reply_turn
            if turn is not None and turn.first_sentence is None:
                turn.first_sentence = now
        elif isinstance(frame, TTSStoppedFrame):
            state.tts_running = False
        elif isinstance(frame, TTSAudioRawFrame):
            turn = self._reply_turn
            if turn is not None and turn.first_audio is None:
                turn.first_audio = now
        elif isinstance(frame, TTSTextFrame):
            turn = self._reply_turn
            # Canned replies (stop acknowledgement, repeats) never pass the LLM.
            if turn is not None and turn.first_token is None and not turn.reply:
                turn.reply = frame.text
        elif isinstance(frame, BotStartedSpeakingFrame):
            state.bot_speaking = True
            turn = self._reply_turn
            if turn is not None and turn.bot_started is None:
                turn.bot_started = now
                self._log(turn)
        elif isinstance(frame, BotStoppedSpeakingFrame):
            state.bot_speaking = False
            state.bot_stops += 1
            if self._reply_turn is not None:
                self._reply_turn.bot_stopped = now
        else:
            handled = False
        if handled:
            self._seen.add(frame.id)
            state.last_activity = time.monotonic()
            if len(self._seen) > 10000:
                self._seen.clear()

    def _log(self, turn: TurnRecord) -> None:
        parts = " ".join(f"{k[:-2]}={v:.2f}s" for k, v in turn.stages().items() if v is not None)
        logger.info(f"Latency: {parts}")

    def summary(self) -> list[dict]:
        return [t.as_dict() for t in self.turns if t.transcript or t.reply]


__all__ = ["STAGES", "ActivityState", "LatencyObserver", "TurnRecord"]
