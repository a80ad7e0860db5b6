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
from dataclasses import dataclass, replace
from typing import Literal

from loguru import logger
from pipecat.frames.frames import Frame, TranscriptionFrame, TTSSpeakFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from nabu_pipeline.config import GuardConfig
from processors.confirmation import SAY_AGAIN, Confirmation
from processors.consumed_transcript import consumed
from processors.partial_repair import PartialRepair, doubtful_part
from processors.phrases import PhraseMatcher
from processors.text_normalise import normalise
from processors.whisper_stt import PROMPT_HEADER, TranscriptEvidence

# Quieter than this, "speech" is room tone: whatever Whisper heard in it is invented.
SILENCE_DBFS = -55.0
ASK_TO_REPEAT = "Sorry, I didn't quite catch that. Could you say it again?"


_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_PROMPT_WORDS = frozenset(normalise(PROMPT_HEADER).split())


def is_phantom(text: str, config: GuardConfig) -> bool:
    """A whole sentence Whisper invents from noise ("Thanks for watching.", a lone "you")."""
    return normalise(text) in {normalise(p) for p in config.phantom_phrases}


def strip_phantom_sentences(text: str, config: GuardConfig) -> str:
    """Remove whole sentences Whisper invents ("What joy there is. Thanks for watching.")."""
    kept = [s for s in _SENTENCE.split(text.strip()) if not is_phantom(s, config)]
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


@dataclass(frozen=True)
class Verdict:
    """What the guard made of a transcript, and why (the reason is logged)."""

    action: Literal["ok", "doubtful", "drop"]
    reason: str = ""
    read_back: bool = False
    """Doubtful but nearly sure, heard as his language and short enough to follow:
    "Did you say ...?" rather than a request to repeat."""
    part: tuple[int, int] | None = None
    """Doubtful in one part only (words start:end of the evidence's words): Nabu asks
    about that part ("Turn on the kitchen what?")."""

    def __str__(self) -> str:
        return f"{self.action}: {self.reason}" if self.reason else self.action


OK = Verdict("ok")


def judge(
    text: str,
    evidence: TranscriptEvidence | None,
    config: GuardConfig,
    vocabulary: tuple[str, ...] = (),
    matcher: PhraseMatcher | None = None,
) -> Verdict:
    """Whether a transcript goes on to the LLM, is doubtful, or is dropped."""
    norm = normalise(text)
    if not norm or not any(c.isalnum() for c in norm):
        return Verdict("drop", "empty")
    if matcher is not None:
        command = matcher.match(text)
        if command is not None and command.trusted:
            # Recognised before any doubt: a lone "Stop" is short and Whisper is rarely sure
            # of it (-0.81 in one CI run), and asking "could you say it again?" while Nabu
            # talks on is the worst answer; a whole-utterance match is evidence enough.
            return Verdict("ok", f"command {command.command}")
    if is_phantom(text, config):
        return Verdict("drop", "phantom phrase")
    if regurgitated_vocabulary(text, vocabulary):
        return Verdict("drop", "vocabulary prompt read back")
    if looping(text):
        return Verdict("drop", "repetitive (decoder loop)")
    if evidence is None:
        return OK
    if evidence.rms_dbfs < SILENCE_DBFS:
        return Verdict("drop", "near-silent audio")
    if evidence.compression_ratio > config.compression_ratio_max:
        return Verdict("drop", "repetitive (decoder loop)")
    unsure = evidence.avg_logprob < config.avg_logprob_min
    if evidence.no_speech_prob > config.no_speech_prob_max and unsure:
        return Verdict("drop", "probably not speech")
    foreign = (
        evidence.language_prob is not None and evidence.language_prob < config.language_prob_min
    )
    if foreign:
        # Whisper doubts it is even his language: sound it could not make out. Reading
        # fluent nonsense back helps no one.
        return Verdict("doubtful", f"language probability {evidence.language_prob:.2f}")
    part = _doubtful_part(text, evidence, config)
    if part is not None:
        start, end = part
        missed = " ".join(w for w, _ in evidence.words[start:end])
        return Verdict("doubtful", f"one part doubtful: {missed!r}", part=part)
    if unsure:
        nearly_sure = evidence.avg_logprob >= config.confirm_logprob_min
        short = 2 <= len(norm.split()) <= config.confirm_max_words
        return Verdict(
            "doubtful",
            f"log-probability {evidence.avg_logprob:.2f}",
            read_back=nearly_sure and short,
        )
    return OK


def _doubtful_part(
    text: str, evidence: TranscriptEvidence, config: GuardConfig
) -> tuple[int, int] | None:
    words = evidence.words
    if normalise(" ".join(w for w, _ in words)) != normalise(text):
        return None  # phantom words were taken off: the words no longer line up
    return doubtful_part(words, config.word_probability_min, config.ask_part_min_words)


class TranscriptGuard(FrameProcessor):
    """Drops invented transcripts; reads back or asks Warren to repeat doubtful ones."""

    def __init__(
        self,
        config: GuardConfig,
        matcher: PhraseMatcher,
        vocabulary: tuple[str, ...] = (),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._config = config
        self._vocabulary = vocabulary
        self._matcher = matcher
        self._confirmation = Confirmation(matcher, config.confirm_timeout_s)
        self._repair = PartialRepair(matcher, config.confirm_timeout_s)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            await self._judge(frame, direction)
            return
        await self.push_frame(frame, direction)

    async def _judge(self, frame: TranscriptionFrame, direction: FrameDirection):
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
        # A cough Whisper wrote as "you" leaves the question open for his real answer.
        whole = None if is_phantom(frame.text, self._config) else self._repair.answer(frame.text)
        if whole is not None:
            logger.info(f"{self}: [{frame.text}] answers the part missed: [{whole}]")
            await self.push_frame(replace(frame, text=whole, result=None), direction)
            return
        text = strip_phantom_sentences(frame.text, self._config)
        verdict = judge(text, frame.result, self._config, self._vocabulary, self._matcher)
        if verdict.action == "ok":
            if text != frame.text.strip():
                logger.info(f"{self}: removed phantom words from [{frame.text}]")
                frame = replace(frame, text=text)
            await self.push_frame(frame, direction)
            return
        await self.push_frame(consumed(frame), direction)
        if verdict.action == "doubtful" and verdict.part is not None:
            words = [w for w, _ in frame.result.words]
            question = self._repair.offer(words, *verdict.part)
            logger.info(f"{self}: [{frame.text}] ({verdict.reason}): asking [{question}]")
            await self.push_frame(TTSSpeakFrame(question, append_to_context=False))
        elif verdict.action == "doubtful":
            question = self._confirmation.offer(text) if verdict.read_back else ASK_TO_REPEAT
            logger.info(
                f"{self}: doubtful transcript [{frame.text}] ({verdict.reason}): "
                + ("reading it back" if verdict.read_back else "asking to repeat")
            )
            await self.push_frame(TTSSpeakFrame(question, append_to_context=False))
        else:
            # Consumed rather than swallowed: the user turn closes now, not after its 5 s
            # safety timeout.
            logger.info(f"{self}: dropped [{frame.text}] ({verdict.reason})")
