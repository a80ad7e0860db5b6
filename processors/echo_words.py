"""Nabu's own words heard back: what Whisper wrote of Nabu's echo leaves the transcript.

Whisper transcribes the microphone as it was (AEC3 also attenuates Warren while Nabu
talks, see `echo_canceller`), so on a speaker Nabu's own sentences come back inside
Warren's: "at nine in the morning. Help me." A call for help over Nabu's reply then
did not read as one (it was doubtful, so Nabu asked first), and a stretch of echo on its
own reached the LLM as if he had said it, and Nabu answered itself.

Taken out: runs of three or more words that Nabu said in that order lately, and only
when Nabu's voice was measurably in the microphone while he spoke (the echo canceller's
coupling, `EchoReference.echo_heard_at`). Two words of his own that Nabu also said
("help me", "yes, the car") stay, and so does everything on a headset or a phone whose
own echo canceller works, where no echo is measured.

In a reply's first moments AEC3 leaves the most of Nabu's voice (it has not yet
converged on that reply), and with a core busy a stretch of one or two of the reply's
opening words came back as a transcript of their own ("the library."): under the
three-word run, it reached the LLM as Warren's and Nabu answered itself, again and
again. So a transcript of one or two words that began in a reply's first REPLY_ONSET_S,
while its echo was measured, is Nabu's when those words open that reply in that order,
unless they are a command of his ("yes", "stop": the phrase table) or hold a word of
help: to "Do you need help?" he may answer "Need help" before the question's echo dies.
Likewise one or two words left between or after Nabu's runs, each like a word Nabu said
("also lend audio book." -> "book."), are the echo misheard, with the same exceptions.
"""

from __future__ import annotations

import collections
import functools
import time
from dataclasses import replace

from loguru import logger
from pipecat.frames.frames import BotStoppedSpeakingFrame, Frame, TranscriptionFrame, TTSTextFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from rapidfuzz import fuzz
from whisper_normalizer.english import EnglishTextNormalizer

from nabu_pipeline.config import SafetyConfig
from processors.consumed_transcript import consumed
from processors.echo_canceller import REPLY_ONSET_S, EchoReference
from processors.help_calls import mentions_help
from processors.phrases import PhraseMatcher
from processors.text_normalise import normalise

# What Nabu said is kept this long: longer than any utterance plus Whisper's time on it.
KEEP_SPOKEN_S = 30.0
# A run of this many words in Nabu's order is Nabu's; shorter ones may be Warren's.
ECHO_RUN_WORDS = 3
_NORMALISE = EnglishTextNormalizer()
# Two words this alike (rapidfuzz's ratio, 0-100, as for home names) are taken for one
# another ("one" and "on": 80).
ALIKE = 75
# Slack before an utterance's audio: VAD's start, and the frames queued before Whisper.
UTTERANCE_SLACK_S = 1.0
# How much of a reply's beginning its opening echo is looked for in.
OPENING_WORDS = 12


class SpokenWords(BaseObserver):
    """What Nabu is saying aloud, sentence by sentence."""

    pushed_frame_types = (TTSTextFrame, BotStoppedSpeakingFrame)  # all on_push_frame reads

    def __init__(self, clock=time.monotonic, **kwargs):
        # A sentence is taken at its first push (the TTS's), so every further push of every
        # frame (audio, fifty times a second, through each stage) need not come here.
        super().__init__(observe_every_push=False, **kwargs)
        self._clock = clock
        self._said: collections.deque[tuple[float, list[str]]] = collections.deque()
        self._seen: collections.deque[int] = collections.deque(maxlen=64)
        self._opening: list[str] = []
        self._new_reply = True

    async def on_push_frame(self, data: FramePushed):
        # Taken when the TTS sends a sentence on, as its audio starts: the output transport
        # passes the text on only after the sentence has played, and its echo is
        # transcribed (and must be recognised) while it is still playing.
        frame = data.frame
        if isinstance(frame, TTSTextFrame) and frame.id not in self._seen:
            self._seen.append(frame.id)
            self.said(frame.text)
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self.reply_ended()

    def said(self, text: str) -> None:
        now = self._clock()
        words = [_word(t) for t in text.split()]
        self._said.append((now, words))
        while self._said and self._said[0][0] < now - KEEP_SPOKEN_S:
            self._said.popleft()
        if self._new_reply:
            self._opening, self._new_reply = [], False
        if len(self._opening) < OPENING_WORDS:
            self._opening += [w for w in words if w][: OPENING_WORDS - len(self._opening)]

    def reply_ended(self) -> None:
        """Nabu fell silent: the next sentence opens a new reply."""
        self._new_reply = True

    def opening(self) -> list[str]:
        """The first OPENING_WORDS words of the reply now playing (or the last one)."""
        return self._opening

    def runs(self) -> set[tuple[str, ...]]:
        """Every ECHO_RUN_WORDS words Nabu said in a row lately (across its sentences too)."""
        words = [w for _, sentence in self._said for w in sentence]
        n = ECHO_RUN_WORDS
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def without_echo(heard: str, said_runs: set[tuple[str, ...]]) -> str:
    """`heard` less every word inside a run of ECHO_RUN_WORDS that Nabu said in that order;
    nothing at all when what is left is ECHO_RUN_WORDS or more words, each of them (or one
    that sounds alike: Whisper wrote "The library one, Elm." of "The library on Elm Street")
    a word Nabu said."""
    tokens = heard.split()
    words = [_word(t) for t in tokens]
    echo = [False] * len(tokens)
    n = ECHO_RUN_WORDS
    for i in range(len(words) - n + 1):
        if tuple(words[i : i + n]) in said_runs:
            echo[i : i + n] = [True] * n
    left = [w for w, e in zip(words, echo, strict=True) if not e and w]
    said = {w for run in said_runs for w in run}
    if len(left) >= n and all(_among(w, said) for w in left):
        return ""
    return " ".join(t for t, e in zip(tokens, echo, strict=True) if not e)


def leftover_echo(left: str, said_runs: set[tuple[str, ...]]) -> bool:
    """Whether what `without_echo` left of a transcript is one or two words each like a word
    Nabu said: a word of the echo Whisper misheard ("also lend audio book." -> "book."), which
    alone reached the LLM as Warren's (CI, one core kept busy)."""
    words = [w for w in (_word(t) for t in left.split()) if w]
    said = {w for run in said_runs for w in run}
    return 0 < len(words) < ECHO_RUN_WORDS and all(_among(w, said) for w in words)


def opening_echo(heard: str, opening: list[str]) -> bool:
    """Whether `heard` is one or two words that open Nabu's reply (`opening`) in that order."""
    words = [w for w in (_word(t) for t in heard.split()) if w]
    n = len(words)
    if not 0 < n < ECHO_RUN_WORDS:
        return False
    return any(opening[i : i + n] == words for i in range(len(opening) - n + 1))


@functools.lru_cache(maxsize=4096)
def _word(token: str) -> str:
    """One word as Whisper's English normaliser writes it: "nine" and "9" are one word."""
    return normalise(_NORMALISE(token)) or normalise(token)


def _among(word: str, said: set[str]) -> bool:
    near = (s for s in said if abs(len(s) - len(word)) <= 2)
    return word in said or any(fuzz.ratio(word, s, score_cutoff=ALIKE) for s in near)


class EchoWords(FrameProcessor):
    """After the STT: takes Nabu's own words out of what Whisper heard (see the module doc)."""

    def __init__(
        self,
        spoken: SpokenWords,
        reference: EchoReference,
        matcher: PhraseMatcher | None = None,
        safety: SafetyConfig | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._spoken = spoken
        self._reference = reference
        self._matcher = matcher
        self._safety = safety

    def _began(self, frame: TranscriptionFrame) -> float | None:
        """When (on the reference's clock) the audio of `frame` began, or None if unknown."""
        evidence = frame.result
        audio_s, stt_s = getattr(evidence, "audio_s", None), getattr(evidence, "stt_s", None)
        if audio_s is None or stt_s is None:
            return None
        return self._reference.now() - stt_s - audio_s

    def _overlapped_echo(self, frame: TranscriptionFrame) -> bool:
        """Whether Nabu's voice was in the microphone during the audio of `frame`."""
        began = self._began(frame)
        if began is None or self._reference.echo_heard_at is None:
            return False
        return self._reference.echo_heard_at >= began - UTTERANCE_SLACK_S

    def _in_reply_onset(self, frame: TranscriptionFrame) -> bool:
        """Whether the audio of `frame` began in the first REPLY_ONSET_S of a reply."""
        began, burst = self._began(frame), self._reference.burst_started_at
        if began is None or burst is None:
            return False
        return burst - UTTERANCE_SLACK_S <= began <= burst + REPLY_ONSET_S

    def _short_echo(self, frame: TranscriptionFrame, kept: str, runs: set[tuple[str, ...]]) -> bool:
        """Whether `kept` (what the runs left of `frame`) is one or two words of Nabu's own:
        misheard among its runs, or opening the reply when heard in its first moments."""
        if kept != frame.text:
            return bool(kept.strip()) and leftover_echo(kept, runs)
        return self._in_reply_onset(frame) and opening_echo(kept, self._spoken.opening())

    def _is_his(self, text: str) -> bool:
        """A command or a word of help: never taken for a short echo."""
        if self._matcher is not None and self._matcher.match(text) is not None:
            return True
        return self._safety is not None and mentions_help(text, self._safety)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if (
            isinstance(frame, TranscriptionFrame)
            and frame.text.strip()
            and self._overlapped_echo(frame)
        ):
            runs = self._spoken.runs()
            kept = without_echo(frame.text, runs)
            if self._short_echo(frame, kept, runs) and not self._is_his(kept):
                kept = ""
            if kept != frame.text:
                logger.info(f"{self}: Nabu's own words heard back: [{frame.text}] -> [{kept}]")
                frame = replace(frame, text=kept) if kept.strip() else consumed(frame)
        await self.push_frame(frame, direction)
