"""faster-whisper STT that keeps the evidence the transcript guard needs.

pipecat's WhisperSTTService filters only on `no_speech_prob` and emits bare text.
Nabu's subclass uses a model loaded once per process, decodes with the configured
beam (stt.beam_size), biases Whisper towards Warren's words, and attaches per-segment
and per-word confidence to the TranscriptionFrame as `result`.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, replace

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from processors.consumed_transcript import nothing_heard
from processors.echo_canceller import RAW_AUDIO_KEY
from processors.utterance_state import UtteranceState

# An utterance kept open across pauses is cut after this much audio (Whisper's window is 30 s).
MAX_UTTERANCE_S = 25.0
# The words before Warren's vocabulary in Whisper's prompt (the guard knows Whisper may echo them).
PROMPT_HEADER = "Names and things Warren mentions"


def vocabulary_prompt(vocabulary: Iterable[str]) -> str | None:
    """Warren's names, places and devices as Whisper's initial prompt.

    Measured on the vocabulary suite (`nabu bench --suite vocabulary`): with tiny.en
    this prompt found 17 of 24 spoken terms against 1 without, and cost less
    accuracy on ordinary speech than the same words as `hotwords` (7.6 % vs 10.7 %
    WER on the shipped clips, 6.6 % with neither).
    """
    words = [w.strip() for w in vocabulary if w.strip()]
    return f"{PROMPT_HEADER}: {', '.join(words)}." if words else None


def squeeze_pauses(samples: np.ndarray, rate: int, keep_s: float = 0.3) -> np.ndarray:
    """Shorten every silence longer than `keep_s` inside an utterance to `keep_s`.

    An utterance kept open across Warren's pauses can hold seconds of silence;
    measured on the paused suite, Whisper then sometimes stopped at the first
    pause or repeated the part before it. It needs no long pauses to read a
    sentence, and shorter audio decodes faster.
    """
    frame = int(rate * 0.02)
    n = len(samples) // frame
    if n < 3:
        return samples
    rms = np.sqrt(np.mean(samples[: n * frame].reshape(n, frame) ** 2, axis=1))
    loud = np.percentile(rms, 90)
    if loud <= 0:
        return samples
    quiet = rms < loud * 0.05
    keep_frames = int(keep_s / 0.02)
    out, run = [], 0
    for i in range(n):
        run = run + 1 if quiet[i] else 0
        if run <= keep_frames:
            out.append(samples[i * frame : (i + 1) * frame])
    out.append(samples[n * frame :])
    return np.concatenate(out)


@dataclass(frozen=True)
class TranscriptEvidence:
    """How much to trust a transcript; the guard decides with these."""

    no_speech_prob: float
    """Highest no-speech probability of the kept segments."""
    avg_logprob: float
    """Duration-weighted average log-probability of the kept segments."""
    compression_ratio: float
    """Highest gzip compression ratio (looping text is very compressible)."""
    audio_s: float
    """Length of the segment Whisper heard."""
    rms_dbfs: float
    """Loudness of that audio; near-silence that still produced words is a phantom."""
    stt_s: float
    """Time Whisper took."""
    language_prob: float | None = None
    """Whisper's probability that the audio is in the configured language (None: can't tell,
    e.g. an English-only model). Unintelligible sound scores low even when decoded fluently."""
    words: tuple[tuple[str, float], ...] = ()
    """Each word of the transcript (punctuation attached) with Whisper's probability of it:
    one word masked by noise scores low in a sentence otherwise heard (issue 19, partial
    repair). Empty where unknown (the OpenAI fallback)."""


def decode(model, samples: np.ndarray, *, language, beam_size: int, prompt: str | None):
    """One Whisper decode as Nabu does it: (segments, language scores, word probabilities).
    Blocking; the STT runs it in a thread, and `nabu bench` times it alone for the floor."""
    segments, _ = model.transcribe(
        samples,
        language=str(language) if language else None,
        beam_size=beam_size,
        initial_prompt=prompt or None,
        condition_on_previous_text=False,
        without_timestamps=True,
        # No temperature fallback: on doubtful audio it re-decodes up to five
        # times (1-2 s here) only to invent more fluent words; the guard judges.
        temperature=0.0,
    )
    segments = list(segments)
    # Thread-local: read it in the thread that decoded.
    scores = getattr(model, "language_probabilities", lambda: None)()
    try:
        words = getattr(model, "word_probabilities", lambda _: ())(segments)
    except Exception as e:  # only the question about a missed word depends on them
        logger.warning(f"Whisper word probabilities failed: {type(e).__name__}: {e}")
        words = ()
    return segments, scores, words


def _floats(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0


def _confidence(segments: list) -> float:
    """Duration-weighted log-probability of the segments with words; no words: -inf."""
    spoken = [s for s in segments if s.text.strip()]
    if not spoken:
        return float("-inf")
    durations = [max(s.end - s.start, 0.01) for s in spoken]
    return float(np.average([s.avg_logprob for s in spoken], weights=durations))


class NabuWhisperSTTService(WhisperSTTService):
    """WhisperSTTService with a shared model, greedy decoding and transcript evidence."""

    def __init__(
        self,
        *,
        model,
        model_name: str,
        beam_size: int = 5,
        language: str = "en",
        vocabulary: Iterable[str] = (),
        utterance: UtteranceState | None = None,
        **kwargs,
    ):
        self._shared_model = model
        self._beam_size = beam_size
        # Read at every decode: the terms can grow (nabu_pipeline/known_words.py: his home's
        # names once it has connected, the names in facts he keeps).
        self._vocabulary = vocabulary
        self._utterance = utterance
        # What VAD heard (the echo canceller's output), sample for sample beside the raw
        # audio in `_audio_buffer`; and, per queued segment in order, that audio when it
        # differs from the raw (Nabu was talking), else None. See `_transcribe`.
        self._cancelled = bytearray()
        self._cancelled_segments: collections.deque[bytes | None] = collections.deque()
        super().__init__(
            settings=WhisperSTTService.Settings(
                model=model_name,
                language=Language(language) if language else None,
                no_speech_prob=1.0,  # the guard decides; keep every segment here
                hotwords=None,
                initial_prompt=vocabulary_prompt(vocabulary),
            ),
            **kwargs,
        )

    # --- Whole-utterance segmentation across Warren's pauses (see utterance_state.py) ---

    async def _handle_user_started_speaking(self, frame: VADUserStartedSpeakingFrame):
        if self._utterance is not None:
            too_long = len(self._audio_buffer) > MAX_UTTERANCE_S * self.sample_rate * 2
            if not self._utterance.start_speech() or too_long:
                # A new utterance: keep only the pre-roll before this speech.
                self._audio_buffer = self._audio_buffer[-self._audio_buffer_size_1s :]
                self._utterance.transcripts.clear()
        await super()._handle_user_started_speaking(frame)

    async def _handle_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame):
        utterance_audio = bytes(self._audio_buffer)
        if self.is_usable:  # else the base class drops the segment untranscribed
            cancelled = bytes(self._cancelled[-len(utterance_audio) :]) if utterance_audio else b""
            differs = len(cancelled) == len(utterance_audio) and cancelled != utterance_audio
            self._cancelled_segments.append(cancelled if differs else None)
        if self._utterance is None:
            await super()._handle_user_stopped_speaking(frame)
            return
        self._utterance.speaking = False
        if self.is_usable:
            self._utterance.awaiting += 1
        await super()._handle_user_stopped_speaking(frame)  # queues it, clears the buffer
        # The utterance stays open through the pause: if he carries on, all of it is
        # transcribed again as one.
        self._audio_buffer = bytearray(utterance_audio)

    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection):
        heard = frame.audio
        raw = frame.metadata.get(RAW_AUDIO_KEY)
        if raw is not None and len(raw) == len(frame.audio):
            frame = replace(frame, audio=raw)  # transcribe the microphone, not the AEC output
        self._cancelled += heard
        if self._utterance is None or self._utterance.pause_expired:
            await super().process_audio_frame(frame, direction)
        else:
            self._user_id = getattr(frame, "user_id", "") or ""
            self._audio_buffer += frame.audio
        # The two buffers end together; this one is kept as long as that one.
        del self._cancelled[: max(0, len(self._cancelled) - len(self._audio_buffer))]

    async def cleanup(self):
        # A session cancelled while its StartFrame was being handled (a phone connecting and
        # leaving at once) gets its segment task after the CancelFrame has passed; end it here
        # so it never outlives the session ("dangling task", "Task was destroyed").
        await self._cancel_segment_task()
        await super().cleanup()

    def _load(self):
        """Use the process-wide model instead of loading one per session."""
        self._model = self._shared_model

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        cancelled = self._cancelled_segments.popleft() if self._cancelled_segments else None
        try:
            async for frame in self._transcribe(audio, cancelled):
                yield frame
        finally:
            if self._utterance is not None:
                self._utterance.awaiting = max(0, self._utterance.awaiting - 1)

    async def _transcribe(
        self, audio: bytes, cancelled: bytes | None = None
    ) -> AsyncGenerator[Frame, None]:
        """Whisper on the raw microphone; while Nabu talked, on the cancelled audio too.

        Over Nabu's own voice the raw audio is two voices at once: "Help me! I've fallen."
        came out as "I'm". The echo canceller's output has Nabu's voice taken out but
        Warren's attenuated, sometimes to nothing (a barged-in "Stop."). Neither wins
        always, so during double talk both are decoded and the more confident transcript
        is kept (a second decode only then, when Warren talks over Nabu).
        """
        if not self._model:
            yield ErrorFrame("Whisper model not available")
            return
        await self.start_processing_metrics()
        rate = self.sample_rate or 16000
        samples = squeeze_pauses(_floats(audio), rate)
        other = None
        if cancelled is not None:
            # The same stretch the base class queued: pad to its trailing silence.
            padded = cancelled + bytes(max(0, len(audio) - len(cancelled)))
            other = squeeze_pauses(_floats(padded), rate)
        language = self._settings.language
        options = {
            "language": language,
            "beam_size": self._beam_size,
            "prompt": vocabulary_prompt(self._vocabulary),
        }
        model = self._model

        def transcribe():
            best = decode(model, samples, **options)
            if other is not None:
                second = decode(model, other, **options)
                if _confidence(second[0]) > _confidence(best[0]):
                    logger.info(f"{self}: over Nabu's voice, the cancelled audio heard more")
                    best = second
            return best

        start = time.perf_counter()
        try:
            segments, language_scores, words = await asyncio.to_thread(transcribe)
        except Exception as e:
            await self.stop_processing_metrics()
            logger.error(f"{self}: Whisper failed: {type(e).__name__}: {e}")
            yield ErrorFrame(f"Whisper failed: {e}")
            return
        stt_s = time.perf_counter() - start
        await self.stop_processing_metrics()

        text = " ".join(s.text.strip() for s in segments if s.text.strip()).strip()
        audio_s = len(samples) / float(self.sample_rate or 16000)
        rms = float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
        if segments:
            durations = [max(s.end - s.start, 0.01) for s in segments]
            avg_logprob = float(np.average([s.avg_logprob for s in segments], weights=durations))
            evidence = TranscriptEvidence(
                no_speech_prob=max(s.no_speech_prob for s in segments),
                avg_logprob=avg_logprob,
                compression_ratio=max(s.compression_ratio for s in segments),
                audio_s=audio_s,
                rms_dbfs=20 * np.log10(max(rms, 1e-9)),
                stt_s=stt_s,
                language_prob=(
                    language_scores.get(str(language).split("-")[0], 0.0)
                    if language_scores and language
                    else None
                ),
                words=words,
            )
        else:
            evidence = None
        logger.info(
            f"{self}: STT {stt_s:.2f}s for {audio_s:.1f}s audio: [{text}]"
            + (
                f" (no_speech={evidence.no_speech_prob:.2f} logprob={evidence.avg_logprob:.2f} "
                f"cr={evidence.compression_ratio:.2f}"
                + (
                    f" {language}={evidence.language_prob:.2f})"
                    if evidence.language_prob is not None
                    else ")"
                )
                if evidence
                else ""
            )
        )
        doubtful = [f"{w} {p:.2f}" for w, p in (evidence.words if evidence else ()) if p < 0.5]
        if doubtful:
            logger.debug(f"{self}: words Whisper doubts: {', '.join(doubtful)}")
        if text and self._utterance is not None:
            self._utterance.transcribed(text)
        if text:
            yield TranscriptionFrame(
                text, self._user_id, time_now_iso8601(), language, result=evidence
            )
        else:
            yield nothing_heard(self._user_id, time_now_iso8601())
