"""Transcript guard: hallucinated or empty transcripts never reach the LLM.

Whisper invents words from silence and noise ("Thanks for watching", a lone
"you"). Slurred speech also lowers Whisper's confidence, so the guard combines
signals (no-speech probability together with log-probability, loop detection,
phantom phrases, loudness) instead of gating on any single one, and a
transcript that is merely doubtful gets a spoken request to repeat rather than
silence.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

from loguru import logger
from pipecat.frames.frames import Frame, TranscriptionFrame, TTSSpeakFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from nabu_pipeline.config import GuardConfig
from processors.confirmation import SAY_AGAIN, Confirmation
from processors.consumed_transcript import consumed
from processors.text_normalise import normalise
from processors.whisper_stt import PROMPT_HEADER, TranscriptEvidence

# Quieter than this, "speech" is room tone: whatever Whisper heard in it is invented.
SILENCE_DBFS = -55.0
ASK_TO_REPEAT = "Sorry, I didn't quite catch that. Could you say it again?"


_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_PROMPT_WORDS = frozenset(normalise(PROMPT_HEADER).split())


def strip_phantom_sentences(text: str, config: GuardConfig) -> str:
    """Remove whole sentences Whisper invents ("What joy there is. Thanks for watching.")."""
    phantoms = frozenset(normalise(p) for p in config.phantom_phrases)
    kept = [s for s in _SENTENCE.split(text.strip()) if normalise(s) not in phantoms]
    return " ".join(kept).strip()


def regurgitated_vocabulary(text: str, vocabulary: tuple[str, ...]) -> bool:
    """A transcript that is mostly the vocabulary prompt read back, not something he said.

    Seen on speech played backwards: "Siobhan Okonkwo Schenectady Poughkeepsie WQXR".
    """
    words = normalise(text).split()
    if len(words) < 2:
        return False
    vocab = {w for term in vocabulary for w in normalise(term).split()} | _PROMPT_WORDS
    from_prompt = sum(w in vocab for w in words)
    return from_prompt >= 2 and from_prompt / len(words) >= 0.6


def looping(text: str) -> bool:
    """The same four words three times or more: Whisper looping below its compression limit.

    Seen on speech played backwards: "Here's not all your food, no food ... Here's not
    all your food, no tea ... Here's not all your food" (compression ratio only 1.66).
    """
    words = normalise(text).split()
    grams = Counter(tuple(words[i : i + 4]) for i in range(len(words) - 3))
    return bool(grams) and grams.most_common(1)[0][1] >= 3


def judge(
    text: str,
    evidence: TranscriptEvidence | None,
    config: GuardConfig,
    vocabulary: tuple[str, ...] = (),
) -> str:
    """Return "ok", "doubtful" or a reason to drop the transcript."""
    norm = normalise(text)
    if not norm or not any(c.isalnum() for c in norm):
        return "drop: empty"
    if norm in config.phantom_phrases:
        return "drop: phantom phrase"
    if regurgitated_vocabulary(text, vocabulary):
        return "drop: vocabulary prompt read back"
    if looping(text):
        return "drop: repetitive (decoder loop)"
    if evidence is None:
        return "ok"
    if evidence.rms_dbfs < SILENCE_DBFS:
        return "drop: near-silent audio"
    if evidence.compression_ratio > config.compression_ratio_max:
        return "drop: repetitive (decoder loop)"
    unsure = evidence.avg_logprob < config.avg_logprob_min
    if evidence.no_speech_prob > config.no_speech_prob_max and unsure:
        return "drop: probably not speech"
    if evidence.language_prob is not None and evidence.language_prob < config.language_prob_min:
        # Whisper doubts it is even his language: sound it could not make out.
        return "doubtful"
    if unsure:
        return "doubtful"
    return "ok"


class TranscriptGuard(FrameProcessor):
    """Drops invented transcripts; reads back or asks Warren to repeat doubtful ones."""

    def __init__(
        self,
        config: GuardConfig,
        vocabulary: tuple[str, ...] = (),
        commands: tuple[str, ...] = (),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._config = config
        self._vocabulary = vocabulary
        # A lone "Stop" is short and Whisper is rarely sure of it (-0.81 in one CI run),
        # but asking "could you say it again?" while Nabu talks on is the worst answer;
        # stopping by mistake costs little. Doubtful commands pass.
        self._commands = frozenset(normalise(c) for c in commands)
        self._confirmation = Confirmation(config)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            # An answer to "Did you say ...?" is judged as an answer, not as a sentence:
            # a short "yes" is often a doubtful transcript on its own.
            answer, confirmed = self._confirmation.answer(frame.text)
            if answer == "yes":
                logger.info(f"{self}: confirmed [{confirmed}]")
                await self.push_frame(replace(frame, text=confirmed, result=None), direction)
                return
            if answer == "no":
                logger.info(f"{self}: read-back rejected; asking to repeat")
                await self.push_frame(consumed(frame), direction)
                await self.push_frame(TTSSpeakFrame(SAY_AGAIN, append_to_context=False))
                return
            text = strip_phantom_sentences(frame.text, self._config)
            verdict = judge(text, frame.result, self._config, self._vocabulary)
            if verdict == "doubtful" and normalise(text) in self._commands:
                verdict = "ok"
            if verdict == "ok":
                if text != frame.text.strip():
                    logger.info(f"{self}: removed phantom words from [{frame.text}]")
                    frame = replace(frame, text=text)
                await self.push_frame(frame, direction)
            elif verdict == "doubtful":
                question = self._confirmation.offer(text, frame.result)
                logger.info(
                    f"{self}: doubtful transcript [{frame.text}]: "
                    + ("reading it back" if question else "asking to repeat")
                )
                await self.push_frame(consumed(frame), direction)
                await self.push_frame(
                    TTSSpeakFrame(question or ASK_TO_REPEAT, append_to_context=False)
                )
            else:
                logger.info(f"{self}: dropped [{frame.text}] ({verdict})")
                # Close the user turn now rather than after its 5 s safety timeout.
                await self.push_frame(consumed(frame), direction)
            return
        await self.push_frame(frame, direction)
