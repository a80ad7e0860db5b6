""" "Did you say ...?": a half-heard sentence is read back to Warren instead of guessed at.

Being asked to repeat over and over is tiring, and most doubtful transcripts of
slurred speech are nearly right. So a transcript that is doubtful only by a
little (average log-probability between `confirm_logprob_min` and the guard's
`avg_logprob_min`, heard as his language, short enough to read back) is
offered back to him; "yes" sends those words to the LLM, "no" asks him to say
it again, and anything else is simply his next sentence. Less likely
transcripts still get a plain request to repeat: reading nonsense back helps no
one. The guard owns one of these per session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from nabu_pipeline.config import GuardConfig
from processors.text_normalise import normalise
from processors.whisper_stt import TranscriptEvidence

SAY_AGAIN = "Sorry. Could you say it again?"


@dataclass
class _Pending:
    text: str
    asked_at: float


class Confirmation:
    def __init__(self, config: GuardConfig, clock=time.monotonic):
        self._config = config
        self._clock = clock
        self._pending: _Pending | None = None
        self._yes = frozenset(normalise(p) for p in config.yes_phrases)
        self._no = frozenset(normalise(p) for p in config.no_phrases)

    def offer(self, text: str, evidence: TranscriptEvidence | None) -> str | None:
        """The question to read back for a doubtful transcript, or None to ask to repeat."""
        self._pending = None
        config = self._config
        words = normalise(text).split()
        if (
            evidence is None
            or evidence.avg_logprob < config.confirm_logprob_min
            or (
                evidence.language_prob is not None
                and evidence.language_prob < config.language_prob_min
            )
            or not 2 <= len(words) <= config.confirm_max_words
        ):
            return None
        spoken = text.strip().rstrip(".!?,;: ")
        self._pending = _Pending(spoken, self._clock())
        return f"Did you say: {spoken}?"

    def answer(self, text: str) -> tuple[str, str | None]:
        """("yes", the confirmed words), ("no", None), or ("", None) when not an answer."""
        pending, self._pending = self._pending, None
        if pending is None or self._clock() - pending.asked_at > self._config.confirm_timeout_s:
            return "", None
        reply = normalise(text)
        if reply in self._yes:
            return "yes", pending.text
        if reply in self._no:
            return "no", None
        return "", None
