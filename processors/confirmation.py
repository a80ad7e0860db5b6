""" "Did you say ...?": a half-heard sentence is read back to Warren instead of guessed at.

Being asked to repeat over and over is tiring, and most doubtful transcripts of
slurred speech are nearly right. The guard decides whether a doubtful transcript
may be read back (its `Verdict.read_back`); this keeps the one question pending:
"yes" sends those words to the LLM, "no" asks him to say it again, and anything
else is simply his next sentence. The guard owns one of these per session.
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

from processors.phrases import Command, PhraseMatcher

T = TypeVar("T")

SAY_AGAIN = "Sorry. Could you say it again?"


class PendingQuestion(Generic[T]):
    """What one spoken question of Nabu's asked, until answered or `timeout_s` has passed.

    Taking it clears it: whatever he says next either answers it or is his next sentence.
    The read-back here and the missed-word question (partial_repair.py) each keep one."""

    def __init__(self, timeout_s: float, clock=time.monotonic):
        self._timeout_s = timeout_s
        self._clock = clock
        self._asked: tuple[T, float] | None = None

    def ask(self, about: T) -> None:
        self._asked = (about, self._clock())

    def take(self) -> T | None:
        """What was asked about, if still open; the question is over either way."""
        asked, self._asked = self._asked, None
        if asked is None or self._clock() - asked[1] > self._timeout_s:
            return None
        return asked[0]


class Confirmation:
    def __init__(self, matcher: PhraseMatcher, timeout_s: float, clock=time.monotonic):
        self._matcher = matcher
        self._pending: PendingQuestion[str] = PendingQuestion(timeout_s, clock)

    def offer(self, text: str) -> str:
        """The question that reads `text` back; its answer is awaited from now."""
        spoken = text.strip().rstrip(".!?,;: ")
        self._pending.ask(spoken)
        return f"Did you say: {spoken}?"

    def answer(self, text: str) -> tuple[str, str | None]:
        """("yes", the confirmed words), ("no", None), or ("", None) when not an answer."""
        pending = self._pending.take()
        if pending is None:
            return "", None
        match = self._matcher.match(text, only=(Command.YES, Command.NO))
        if match is None:
            return "", None
        if match.command == Command.YES:
            return "yes", pending
        return "no", None
